"""The flags after `--` (and server.extra_args, and the keys of SGLang's own --config file) are judged with the
installed SGLang's recorded parser table, or declared unchecked. The recorded tables are the real sglang-kt 0.7.2
and sglang 0.5.23 parsers (tests/data/parser_*.json, checked against the live ones in tests/contract); the config
files are real files read through facts/sglang_config.py."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kt_launch.cli import main
from kt_launch.facts.sglang import load_sglang_facts_file
from kt_launch.facts.sglang_config import read_sglang_config
from kt_launch.render.argv import render_command

from core.support import plan_for
from operate.support import no_hang

DATA = Path(__file__).resolve().parents[1] / "data"
KT = load_sglang_facts_file(DATA / "parser_sglang-kt_0.7.2.json")
UP = load_sglang_facts_file(DATA / "parser_sglang_0.5.23.json")
PLAIN = "model: {path: /m}\nkt: {weight_path: /w, method: AMXINT8}\n"
MINE = {"KT-E303", "KT-E306", "KT-E320", "KT-E321", "KT-E322", "KT-E323", "KT-E324", "KT-E325", "KT-W320",
        "KT-W321", "KT-I320", "KT-I321"}
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pt") / "p.yaml"
    p.write_text(PLAIN)
    return p


def judged(profile, args=(), sglang=KT, extra=None, config_checks=True):
    sets = [f"server.extra_args={json.dumps(extra)}"] if extra else []
    cfg = read_sglang_config([*(extra or []), *args], config_checks) if "--config" in [*(extra or []), *args] else None
    plan = plan_for(profile, sglang=sglang, passthrough=tuple(args), sets=sets, sglang_config=cfg)
    cmd = render_command(plan)
    return [f for f in plan.findings + cmd.findings if f.code in MINE], cmd


def only(findings, code):
    return [f for f in findings if f.code == code]


def _generated(profile, facts=KT) -> dict[str, str]:
    """dest -> the flag kt-launch generates for the profile on that SGLang."""
    argv = render_command(plan_for(profile, sglang=facts)).argv
    return {facts.options[a].dest: a for a in argv if a in facts.options}


def _not_a_prefix(flag: str) -> bool:
    return not any(s.startswith(flag) for s in KT.options) and not any(flag.startswith(s) for s in KT.options)


unknown_flags = st.from_regex(r"--[a-z][a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,3}", fullmatch=True).filter(_not_a_prefix)


@_SETTINGS
@given(flag=unknown_flags, value=st.sampled_from(["1", "x", "a b", "-3"]))
def test_unknown_flag_is_an_error_with_a_parser_and_info_without(profile, flag, value):
    found, _ = judged(profile, [flag, value])
    assert [f.code for f in found] == ["KT-E306"], found
    assert found[0].field("flag") == flag and found[0].field("where") == "after --"
    found, _ = judged(profile, [flag, value], sglang=None)
    assert [f.code for f in found] == ["KT-I320"] and found[0].field("flags") == flag  # its value is no flag


def test_bogus_flag_did_you_mean(profile):
    found, _ = judged(profile, ["--log-levle", "debug"])
    (f,) = found
    assert f.code == "KT-E306" and "did you mean --log-level" in f.fix and f.field("suggestion").startswith("--log-level")
    assert judged(profile, ["--bogus-flag", "1"])[0][0].code == "KT-E306"
    assert [f.code for f in judged(profile, ["--bogus-flag", "1"], sglang=None)[0]] == ["KT-I320"]


def _valid_value(o) -> list[str]:
    if o.nargs == 0:
        return []
    if o.choices:
        return [str(o.choices[-1])]
    return {"int": ["2"], "float": ["0.5"]}.get(o.type, ["x y"])


def _valid_options(facts, profile):
    made = _generated(profile, facts)
    return sorted({o.flag: o for o in facts.options.values() if o.dest not in made and o.flag.startswith("--")
                   and o.action in ("_StoreAction", "_StoreTrueAction") and o.type in (None, "str", "int", "float")
                   and o.dest not in ("config",)}.items())


@pytest.mark.parametrize("facts", [KT, UP], ids=["sglang-kt", "sglang"])
def test_every_valid_flag_plans_clean(profile, facts, tmp_path):
    """Every flag of the real table that kt-launch does not generate, with a value its parser takes, in full and as
    `--flag=value`: no pass-through finding."""
    prof = tmp_path / "p.yaml"
    prof.write_text(PLAIN + f"runtime: {{flavor: {facts.flavor}}}\n")
    opts = _valid_options(facts, prof)
    assert len(opts) > 200
    for flag, o in opts:
        vals = _valid_value(o)
        for args in ([flag, *vals], [f"{flag}={vals[0]}"] if len(vals) == 1 else [flag]):
            found, _ = judged(prof, args, sglang=facts)
            assert not found, (args, found)


def test_generated_flags_refused_under_every_spelling(profile):
    """A flag kt-launch generates is KT-E303 as written, as an alias of it, as `=value` and as an abbreviation."""
    made = _generated(profile)
    assert {"port", "kt_cpuinfer", "tensor_parallel_size", "model_path"} <= set(made)
    for dest, flag in made.items():
        o = KT.options[flag]
        spellings = set(o.option_strings) | {s + "=1" for s in o.option_strings}
        for s in o.option_strings:  # the shortest unique prefix argparse accepts
            for n in range(3, len(s)):
                if [x for x in KT.options if x.startswith(s[:n])] == [s] or \
                        {KT.options[x].dest for x in KT.options if x.startswith(s[:n])} == {dest} and \
                        len([x for x in KT.options if x.startswith(s[:n])]) == 1:
                    spellings.add(s[:n])
                    break
        for sp in spellings:
            args = [sp] if "=" in sp or not o.takes_value else [sp, "1"]
            found, _ = judged(profile, args)
            assert "KT-E303" in {f.code for f in found}, (sp, found)
            e303 = only(found, "KT-E303")[0]
            assert e303.field("option") == flag
    found, _ = judged(profile, ["--kt-cpuinfer", "99"], sglang=None)
    assert [f.code for f in found] == ["KT-E303"] and "--set kt.cpuinfer" in found[0].fix


@pytest.mark.parametrize("args,code,flag", [
    (["--chat-template", "--foo"], "KT-E321", "--chat-template"),   # a value that looks like a flag is a flag
    (["--log-level"], "KT-E321", "--log-level"),                    # no value at all
    (["--kv-cache-dtype", "bogus"], "KT-E321", "--kv-cache-dtype"),  # not a choice
    (["--max-running-requests", "many"], "KT-E321", "--max-running-requests"),  # not an int
    (["--enable-metrics=yes"], "KT-E321", "--enable-metrics"),       # a switch takes no =value
    (["-h"], "KT-E322", "-h"), (["--help"], "KT-E322", "--help"), (["--he"], "KT-E322", "--he"),
    (["--enable"], "KT-E306", "--enable"),                          # ambiguous abbreviation
    (["stray"], "KT-E320", "stray"), (["--", "--log-level", "info"], "KT-E320", "--"),
    (["--log-level", "info", "--log-level", "debug"], "KT-W320", "--log-level"),
])
def test_parser_semantics(profile, args, code, flag):
    found, _ = judged(profile, args)
    assert code in {f.code for f in found}, found
    assert any(f.field("flag") == flag for f in only(found, code)), found


@pytest.mark.parametrize("args", [
    ["--chat-template=-x"], ["--chat-template", "a b c"], ["--chat-template", "-5"], ["--kv-cache-dt", "auto"],
    ["--chat-template", "--x y"],
])
def test_values_that_look_like_flags_and_abbreviations_pass(profile, args):
    assert judged(profile, args)[0] == []


# -- SGLang's own --config FILE ------------------------------------------------------------------

def _cfg(tmp_path, text, name="sgl.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_config_setting_port_is_refused(profile, tmp_path):
    path = _cfg(tmp_path, "port: 4000\nkt-cpuinfer: 3\nlog-level: info\n")
    for facts in (KT, None):
        found, _ = judged(profile, ["--config", path], sglang=facts)
        e303 = only(found, "KT-E303")
        assert {f.field("key") for f in e303} == {"port", "kt-cpuinfer"}, found
        assert all(f.field("file") == path for f in e303)
    found, _ = judged(profile, ["--config", path], sglang=None)
    assert only(found, "KT-I320")[0].field("flags") == "log-level"


@_SETTINGS
@given(key=unknown_flags.map(lambda f: f[2:]))
def test_config_unknown_key(profile, tmp_path_factory, key):
    path = _cfg(tmp_path_factory.mktemp("c"), f"{key}: 1\n")
    found, _ = judged(profile, ["--config", path])
    assert [f.code for f in found] == ["KT-E306"] and found[0].field("key") == key and found[0].field("file") == path
    found, _ = judged(profile, ["--config", path], sglang=None)
    assert [f.code for f in found] == ["KT-I320"] and found[0].field("file") == path


def test_config_keys_are_the_hyphenated_flag_names(profile, tmp_path):
    found, _ = judged(profile, ["--config", _cfg(tmp_path, "kt_num_gpu_experts: 2\n")])
    assert [f.code for f in found] == ["KT-E306"] and "did you mean kt-num-gpu-experts" in found[0].fix
    ok = _cfg(tmp_path, "log-level: info\nenable-metrics: true\ndisable-radix-cache: false\ncuda-graph-bs: [1, 2]\n",
              "ok.yaml")
    assert judged(profile, ["--config", ok])[0] == []


def test_config_and_command_line_set_the_same_flag(profile, tmp_path):
    found, _ = judged(profile, ["--config", _cfg(tmp_path, "log-level: info\n"), "--log-level", "debug"])
    assert [f.code for f in found] == ["KT-W320"]


def test_config_unsupported_action_and_a_reader_that_does_not_import(profile, tmp_path):
    found, _ = judged(profile, ["--config", _cfg(tmp_path, "lora-paths: [a]\n")])
    assert "KT-E325" in {f.code for f in found}
    # the recorded sglang 0.5.23 venv has no PyYAML: its --config reader cannot import, so any --config stops it
    assert UP.config_merger is not None and "yaml" in UP.config_merger.error
    found, _ = judged(profile, ["--config", _cfg(tmp_path, "log-level: info\n", "u.yaml")], sglang=UP)
    assert "KT-E325" in {f.code for f in found}


def _link(tmp_path, target):
    p = tmp_path / "z.yaml"
    p.symlink_to(target)
    return str(p)


def _fifo(tmp_path):
    p = tmp_path / "fifo.yaml"
    os.mkfifo(p)
    return str(p)


@pytest.mark.parametrize("make,words", [
    (_fifo, "FIFO"),
    (lambda t: str(t / "missing.yaml"), "no such file"),
    (lambda t: _cfg(t, "a:\n  b: 1\n"), "mapping"),
    (lambda t: _cfg(t, "- log-level\n- info\n"), "at the top"),
    (lambda t: _cfg(t, "a: " + "[" * 40 + "]" * 40 + "\n"), "nested deeper"),
    (lambda t: _cfg(t, "log-level: info\nlog-level: debug\n"), "twice"),
    (lambda t: _cfg(t, "a: '" + "x" * (2 << 20) + "'\n"), "more than"),
    (lambda t: _cfg(t, "1: x\n"), "key 1"),
    (lambda t: str(t), "directory"),
    (lambda t: _link(t, "/dev/zero"), "not a regular file"),
])
def test_bad_config_file_is_a_clear_error(profile, tmp_path, make, words):
    path = make(tmp_path)
    if not path.endswith((".yaml", ".yml")):
        os.rename(path, path + ".d.yaml") if words == "directory" else None
        path = path + ".d.yaml"
    for facts in (KT, None):
        found, _ = no_hang(lambda: judged(profile, ["--config", path], sglang=facts))
        e = only(found, "KT-E324")
        assert e and words in e[0].message and path in e[0].message and e[0].field("file") == path, found


@pytest.mark.parametrize("args", [
    ["--config=CFG"], ["--conf", "CFG"], ["--config", "CFG", "--config", "CFG"], ["--config"],
    ["--config", "sgl.txt"], ["--config", "NESTED"],
])
def test_config_forms_sglang_stops_on_or_never_reads(profile, tmp_path, args):
    path = _cfg(tmp_path, "log-level: info\n")
    nested = _cfg(tmp_path, f"config: {path}\n", "nested.yaml")
    args = [a.replace("CFG", path).replace("NESTED", nested) for a in args]
    found, _ = judged(profile, args)
    assert [f.code for f in found if f.level == "error"] == ["KT-E323"], found  # said once, and nothing else


def test_no_check_declares_the_config_unread(profile, tmp_path):
    found, _ = judged(profile, ["--config", _cfg(tmp_path, "port: 1\n")], config_checks=False)
    assert [f.code for f in found] == ["KT-I321"]


def test_findings_carry_fields_in_json(capsys, tmp_path, host_file):
    prof = tmp_path / "p.yaml"
    prof.write_text(PLAIN)
    cfg = _cfg(tmp_path, "port: 4000\n")
    rc = main(["check", "--profile", str(prof), "--json", "--no-check", "--host-facts", str(host_file),
               "--", "--bogus-flag", "1"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and any(f["code"] == "KT-I320" and f["fields"]["flags"] == "--bogus-flag" for f in doc["findings"])
    rc = main(["check", "--profile", str(prof), "--json", "--host-facts", str(host_file), "--set",
               "runtime.flavor=sglang-kt", "--", "--config", cfg])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 3 and any(f["code"] == "KT-E303" and f["fields"]["key"] == "port" and f["fields"]["file"] == cfg
                           for f in doc["findings"])


KT_LORA = """
model: {path: /models/DeepSeek-V2-Lite-Chat}
kt: {weight_path: /models/DeepSeek-V2-Lite-Chat-CPU-weight-INT8}
moe_lora: {path: /lora/moe_lora.pt, rank: 8, alpha: 16.0, sft_method: AMXBF16_SFT}
runtime: {flavor: sglang-kt}
"""


@pytest.mark.parametrize("text,code", [("pp-size: 2\n", "KT-E315"), ("max-running-requests: 1\n", "KT-E312"),
                                       ("speculative-algorithm: EAGLE\n", "KT-E316")])
def test_flavour_rules_read_the_config_file_too(tmp_path, text, code):
    """sglang-kt expert-LoRA rules that read pass-through values see the --config file's keys as well."""
    prof = tmp_path / "lora.yaml"
    prof.write_text(KT_LORA)
    path = _cfg(tmp_path, text)
    plan = plan_for(prof, sglang=KT, passthrough=("--config", path), sglang_config=read_sglang_config(["--config", path]))
    assert code in {f.code for f in plan.findings}
    assert code not in {f.code for f in plan_for(prof, sglang=KT).findings}


def test_an_sglang_without_config_calls_it_an_unknown_flag(profile, tmp_path):
    from dataclasses import replace
    from types import MappingProxyType

    bare = replace(KT, options=MappingProxyType({s: o for s, o in KT.options.items() if o.dest != "config"}))
    found, _ = judged(profile, ["--config", _cfg(tmp_path, "port: 1\n")], sglang=bare)
    assert [(f.code, f.field("flag")) for f in found] == [("KT-E306", "--config")]
