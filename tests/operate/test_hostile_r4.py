"""Red team 4 (issue 23), the input classes that still failed: each row is run through the real CLI (in-process,
as tests/operate/test_hostile.py runs its corpus) and must give a clear answer naming the file or field, with the
exit code of its class, never a traceback or a silent wrong value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from devtools import synthetic
from kt_launch.core.options import OPTIONS
from operate.test_hostile import Hang, Run, _call, _check, _dry, _host, _profile

BAD_NUMBERS = {"400 digits": "9" * 400, "-400 digits": "-" + "9" * 400, "2**63": str(1 << 63), "1e400": "1e400",
               "NaN": "NaN", "-Infinity": "-Infinity"}


def run(tmp: Path, args: list[str], monkeypatch, capsys, env: dict | None = None) -> tuple[int, str]:
    try:
        rc, out, err = _call(tmp, Run(args, env=env or {}), monkeypatch, capsys)
    except Hang:
        pytest.fail("no answer (a hang)")
    assert "Traceback" not in out + err and "internal error" not in out + err, (out + err)[-3000:]
    return rc, out + err


# -- item 9: numbers a user file holds -----------------------------------------------------------------------

@pytest.mark.parametrize("field", ["lora_alpha", "r"])
@pytest.mark.parametrize("label", sorted(BAD_NUMBERS))
@pytest.mark.parametrize("command", ["check", "dry-run", "init"])
def test_a_number_out_of_range_in_adapter_config_names_the_file_and_field(tmp_path, monkeypatch, capsys, field,
                                                                           label, command):
    root = tmp_path / "t"
    synthetic.demo(root)
    cfg = root / "lora" / "adapter_config.json"
    text = cfg.read_text()
    doc = json.loads(text)
    cfg.write_text(text.replace(f'"{field}": {json.dumps(doc[field])}', f'"{field}": {BAD_NUMBERS[label]}'))
    assert BAD_NUMBERS[label] in cfg.read_text()
    if command == "init":
        args = ["init", str(root / "model"), "--lora", str(root / "lora"), "-o", str(tmp_path / "out.yaml"),
                "--host-facts", str(_host(tmp_path))]
    elif command == "check":
        args = _check(tmp_path, synthetic.moe_lora_profile(root))
    else:
        args = ["--profile", str(_profile(tmp_path, synthetic.moe_lora_profile(root))), "--host-facts",
                str(_host(tmp_path)), "--dry-run"]
    rc, text = run(tmp_path, args, monkeypatch, capsys)
    assert rc in (2, 3), text
    assert "adapter_config.json" in text and field in text and ("out of range" in text or "NaN" in text), text


@pytest.mark.parametrize("label", ["1e400", ".inf", "-.inf", ".nan", "400 digits", "2**63"])
def test_a_number_out_of_range_in_a_profile_names_the_key_and_line(tmp_path, monkeypatch, capsys, label):
    value = {"400 digits": "9" * 400, "2**63": str(1 << 63)}.get(label, label)
    p = tmp_path / "p.yaml"
    p.write_text(f"model:\n  path: /nonexistent/m\nserver:\n  mem_fraction_static: {value}\n")
    rc, text = run(tmp_path, _dry(tmp_path, profile=p), monkeypatch, capsys)
    assert rc == 2 and "server.mem_fraction_static" in text and "line 4" in text and str(p) in text, text


def test_a_duplicate_yaml_key_names_its_line(tmp_path, monkeypatch, capsys):
    p = tmp_path / "p.yaml"
    p.write_text("model:\n  path: /nonexistent/m\nserver:\n  port: 30000\n  host: 127.0.0.1\n  port: 30001\n")
    rc, text = run(tmp_path, _dry(tmp_path, profile=p), monkeypatch, capsys)
    assert rc == 2 and "'port' appears twice" in text and "line 6" in text, text


# -- empty text, duplicate nodes, a message that names its key once ---------------------------------------------

TEXT_KEYS = [o.key for o in OPTIONS if o.type is str and o.settable]


@pytest.mark.parametrize("how", ["set", "env"])
@pytest.mark.parametrize("key", TEXT_KEYS)
def test_an_empty_text_value_is_refused_naming_the_key(tmp_path, monkeypatch, capsys, key, how):
    """`--set server.host=` would listen on every interface, `KT_LAUNCH_SERVER__API_KEY=` render `--api-key ''`."""
    for value in ("", "  "):
        if how == "set":
            args, env = _dry(tmp_path, "--set", f"{key}={value}"), {}
        else:
            args, env = _dry(tmp_path), {"KT_LAUNCH_" + key.upper().replace(".", "__"): value}
        rc, text = run(tmp_path, args, monkeypatch, capsys, env)
        assert rc == 2 and key in text and "is empty" in text, text


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(nodes=st.lists(st.integers(0, 7), min_size=1, max_size=6).filter(lambda xs: len(set(xs)) < len(xs)),
       how=st.sampled_from(["set", "profile"]))
def test_a_numa_node_named_twice_is_refused(tmp_path_factory, monkeypatch, capsys, nodes, how):
    tmp = tmp_path_factory.mktemp("numa")
    if how == "set":
        args = _dry(tmp, "--set", f"kt.numa_nodes={json.dumps(nodes)}")
    else:
        doc = yaml.safe_load(_profile(tmp).read_text())
        doc["kt"]["numa_nodes"] = nodes
        args = _dry(tmp, profile=_profile(tmp, doc))
    with monkeypatch.context() as m:
        rc, text = run(tmp, args, m, capsys)
    assert rc == 2 and "kt.numa_nodes" in text and "twice" in text, text


def test_a_bad_set_value_names_the_key_once_and_the_value(tmp_path, monkeypatch, capsys):
    rc, text = run(tmp_path, _dry(tmp_path, "--set", "kt.cpuinfer=abc"), monkeypatch, capsys)
    assert rc == 2 and text.count("kt.cpuinfer") == 1 and "'abc'" in text, text


# -- token counts as vLLM users type them ------------------------------------------------------------------------

TOKEN_KEYS = [o.key for o in OPTIONS if o.tokens]


def test_token_count_keys_are_declared():
    assert {"server.max_total_tokens", "server.chunked_prefill_size", "fit.kv_tokens"} <= set(TOKEN_KEYS)


@pytest.mark.parametrize("key", TOKEN_KEYS)
@pytest.mark.parametrize("text,value", [("32K", 32768), ("32k", 32000), ("1.5k", 1500), ("1M", 1 << 20),
                                        ("2048", 2048)])
def test_token_counts_take_k_and_m_suffixes_in_set_env_and_yaml(key, text, value):
    from kt_launch.core.profile import SECTION_MODELS, parse_text

    section, name = key.split(".", 1)
    model = SECTION_MODELS[section]
    assert getattr(model.model_validate({name: parse_text(key, text)}), name) == value
    yaml_value = yaml.safe_load(f"v: {text}")["v"]  # 32K is a string in YAML, 2048 a number
    assert getattr(model.model_validate({name: yaml_value}), name) == value


@pytest.mark.parametrize("text", ["0.3K", "32Q", "K", "1e3k", "-1k", "32 K"])
def test_a_token_count_that_is_not_a_whole_number_is_refused(tmp_path, monkeypatch, capsys, text):
    rc, out = run(tmp_path, _dry(tmp_path, "--set", f"server.max_total_tokens={text}"), monkeypatch, capsys)
    assert rc == 2 and "server.max_total_tokens" in out, out


def test_32k_reaches_sglang_as_a_number(tmp_path, monkeypatch, capsys):
    rc, out = run(tmp_path, _dry(tmp_path, "--json", "--set", "server.max_total_tokens=32K"), monkeypatch, capsys)
    argv = json.loads(out)["argv"]
    assert rc == 0 and argv[argv.index("--max-total-tokens") + 1] == "32768", out


# -- item 15: a GPU too small to size ------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=st.one_of(st.sampled_from([1, 1024, 1 << 20, 512 << 20, 1 << 30, 3 << 30]),
                      st.integers(1, 8 << 30)))
def test_a_gpu_too_small_is_a_finding_never_a_negative_fraction(tmp_path_factory, monkeypatch, capsys, size):
    from operate.support import HOST

    tmp = tmp_path_factory.mktemp("gpu")
    root = tmp / "t"
    synthetic.demo(root)
    host = json.loads(json.dumps(HOST))
    host["gpus"][0]["memory_bytes"] = size
    host["gpus"][0].pop("used_bytes", None)
    args = ["--profile", str(_profile(tmp, synthetic.amx_profile(root))), "--host-facts",
            str(_host(tmp, host)), "--dry-run", "--json"]
    with monkeypatch.context() as m:
        rc, out = run(tmp, args, m, capsys)
    doc = json.loads(out[out.index("{"):])
    mf = doc["memory"]["mem_fraction_static"]
    assert mf >= 0, mf
    found = [f["code"] for f in doc["findings"]]
    if mf == 0:
        assert rc == 3 and "KT-E150" in found, found


# -- item 15: control characters in every echoed value; KT_LAUNCH_PROFILE_DIR without a home ---------------------

CONTROLS = ["\x1b[2J", "\x1b]0;owned\x07", "\x9b31m", "\r", "\x08", "\u2028", "\x7f"]
RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(ctrl=st.sampled_from(CONTROLS), where=st.sampled_from(["profile", "served_name", "host-facts", "set-key",
                                                             "profile-dir"]),
       text=st.text(alphabet="abc-", max_size=5))
def test_no_echoed_value_writes_a_control_character(tmp_path_factory, monkeypatch, capsys, ctrl, where, text):
    tmp = tmp_path_factory.mktemp("ctrl")
    value = f"{text}{ctrl}{text}x"
    env: dict = {}
    if where == "profile":
        args = _dry(tmp, profile=Path(value))  # a NAME: no such profile, echoed in the miss message
    elif where == "served_name":
        args = _dry(tmp, "--set", f"model.served_name={value}")
    elif where == "host-facts":
        args = _dry(tmp, host=tmp / value)
    elif where == "set-key":
        args = _dry(tmp, "--set", f"{value}=1")
    else:
        args, env = _dry(tmp, profile=Path("nothere")), {"KT_LAUNCH_PROFILE_DIR": f"/{value}"}
    with monkeypatch.context() as m:
        rc, out = run(tmp, args, m, capsys, env)
    assert not RAW.search(out), repr(out[-2000:])


def test_kt_launch_profiles_escapes_a_file_name_and_lists_each_profile_once(tmp_path, monkeypatch, capsys):
    from kt_launch.facts.locate import BUNDLED

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "\x1b[2Jevil.yaml").write_text("model: {path: m}\n")
    (configs / "demo.yaml").write_bytes((BUNDLED / "demo.yaml").read_bytes())  # the same profile: listed once
    (configs / "deepseek-v2-lite.yaml").write_text("model: {path: other}\n")  # another one: shadows the bundled
    rc, out = run(tmp_path, ["profiles"], monkeypatch, capsys)
    assert rc == 0 and not RAW.search(out) and "\\x1b[2Jevil" in out, out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names.count("demo") == 1 and names.count("deepseek-v2-lite") == 2, out
    assert "(shadowed)" in out


def test_in_the_checkout_each_profile_is_listed_once(monkeypatch, capsys):
    from kt_launch.facts.locate import BUNDLED

    rc, out = run(BUNDLED.parent, ["profiles"], monkeypatch, capsys)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert rc == 0 and names and len(names) == len(set(names)), out


@pytest.mark.parametrize("profile_dir", ["~nosuchuser-kt/p", "~nosuchuser-kt", "~\x1b[2J/p"])
def test_a_profile_dir_without_a_home_is_a_miss_with_a_line(tmp_path, monkeypatch, capsys, profile_dir):
    env = {"KT_LAUNCH_PROFILE_DIR": profile_dir}
    rc, out = run(tmp_path, _dry(tmp_path, profile=Path("nothere")), monkeypatch, capsys, env)
    assert rc == 2 and "$KT_LAUNCH_PROFILE_DIR" in out and "not searched" in out, out
    rc, out = run(tmp_path, ["--profile", "demo", "--dry-run", "--no-check"], monkeypatch, capsys, env)
    assert rc == 0, out  # found further on (bundled)
    rc, out = run(tmp_path, ["profiles"], monkeypatch, capsys, env)
    assert rc == 0 and "not searched" in out, out


def test_the_bundled_demo_where_it_was_not_built_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    rc, out = run(tmp_path, ["--profile", "demo", "--dry-run"], monkeypatch, capsys)
    assert rc == 3 and "KT-I150" in out and "devtools/synthetic.py demo/" in out and "make demo" in out
    synthetic.demo(tmp_path / "demo")
    rc, out = run(tmp_path, ["--profile", "demo", "--dry-run"], monkeypatch, capsys)
    assert "KT-I150" not in out, out


# -- item 15: runtime.cuda_visible_devices that hides GPUs ----------------------------------------------------------

def _two_gpu_host() -> dict:
    from operate.support import HOST

    host = json.loads(json.dumps(HOST))
    big = dict(host["gpus"][0], index=1, memory_bytes=host["gpus"][0]["memory_bytes"] * 2, uuid="GPU-big")
    host["gpus"] = [dict(host["gpus"][0], uuid="GPU-small"), big]
    return host


@pytest.mark.parametrize("visible,rc_want,code,gpu", [
    ("-1", 3, "KT-E151", None), ("-1,0", 3, "KT-E151", None), ("-5", 3, "KT-E151", None),
    ("0,-1", 0, None, 0), ("1", 0, None, 1), ("1,0", 0, None, 1), ("GPU-big", 0, None, 1),
    ("7", 0, "KT-W231", None), ("7,0", 0, "KT-W231", None), ("9" * 5000, 0, "KT-W231", None),
    ("-" + "9" * 5000, 3, "KT-E151", None)])
def test_cuda_visible_devices_picks_the_planned_gpus_from_recorded_facts(tmp_path, monkeypatch, capsys, visible,
                                                                        rc_want, code, gpu):
    """The plan sizes the GPUs SGLang will see (CUDA's rules: indices or UUID prefixes, stopping at the first
    entry that names none); `-1` hides every GPU, an error naming the key, never GPU experts on GPU 0."""
    root = tmp_path / "t"
    synthetic.demo(root)
    args = ["--profile", str(_profile(tmp_path, synthetic.amx_profile(root))), "--host-facts",
            str(_host(tmp_path, _two_gpu_host())), "--dry-run", "--json", "--set",
            f"runtime.cuda_visible_devices={visible}"]
    rc, out = run(tmp_path, args, monkeypatch, capsys)
    doc = json.loads(out[out.index("{"):])
    codes = [f["code"] for f in doc["findings"]]
    assert rc == rc_want, codes
    if code:
        assert code in codes and "runtime.cuda_visible_devices" in json.dumps(doc["findings"]), doc["findings"]
    gpus = doc["memory"]["gpus"] if doc.get("memory") else []
    if gpu is None:
        argv = doc["argv"]
        assert argv[argv.index("--kt-num-gpu-experts") + 1] == "0" and not gpus
    else:
        sizes = {0: 80 << 30, 1: 160 << 30}
        assert [g["total_bytes"] for g in gpus][:1] == [sizes[gpu]], gpus


# -- newcomer: a mistyped option gets a did-you-mean, before any "required" complaint ---------------------------

def _options() -> list[tuple[list[str], str]]:
    from kt_launch.cli import build_parser, subparsers

    subs = subparsers()
    out = []
    for prefix, parser in [([], build_parser(subs)), *(([name], p) for name, p in subs.items())]:
        for a in parser._actions:
            out += [(prefix, s) for s in a.option_strings if s.startswith("--") and len(s) >= 8 and s != "--help"]
    return out


@pytest.mark.parametrize("prefix,option", _options())
def test_a_mistyped_option_gets_did_you_mean(tmp_path, monkeypatch, capsys, prefix, option):
    typo = option[:4] + option[5:]  # one letter dropped: --profle, --dry-rn
    rc, out = run(tmp_path, [*prefix, typo, "x"], monkeypatch, capsys)
    assert rc == 2 and f"unknown argument {typo!r}" in out and "did you mean" in out and option in out, out
    assert "required" not in out, out


# -- the reader: any out-of-range number anywhere in a file is refused naming its field --------------------------

_KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=6)
_LEAVES = st.one_of(st.integers(-(1 << 63) + 1, (1 << 63) - 1), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8), st.booleans(), st.none())
_DOCS = st.recursive(_LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(_KEYS, kids, max_size=4)), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(_KEYS, _DOCS, min_size=1, max_size=4), bad=st.sampled_from(list(BAD_NUMBERS.values())),
       data=st.data())
def test_the_reader_refuses_an_out_of_range_number_anywhere_naming_its_field(doc, bad, data):
    from kt_launch.facts.reader import ADAPTER_CONFIG, ReadError, parse_json

    text = json.dumps(doc)
    assert parse_json("f.json", text.encode(), ADAPTER_CONFIG) == json.loads(text)  # in range: read as json reads it
    # put the bad number at a random place: a new key of some object in the document
    objects = [("", doc)]
    for path, node in objects:
        for k, v in node.items():
            if isinstance(v, dict):
                objects.append((f"{path}.{k}" if path else k, v))
    path, target = data.draw(st.sampled_from(objects))
    target["bad_one"] = 0
    text = json.dumps(doc).replace('"bad_one": 0', f'"bad_one": {bad}')
    with pytest.raises(ReadError) as e:
        parse_json("f.json", text.encode(), ADAPTER_CONFIG)
    field = f"{path}.bad_one" if path else "bad_one"
    assert f"f.json: {field}:" in str(e.value), str(e.value)


def test_supervised_runs_escape_control_characters_in_kt_launchs_own_lines():
    """--supervise writes its own lines as bytes (beside the child's): they are escaped there too."""
    import io
    import time

    from kt_launch.run.loop import Console

    raw = io.BytesIO()
    err = io.TextIOWrapper(raw, encoding="utf-8")
    console = Console(set(), out=io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), err=err)
    for ctrl in CONTROLS:
        console.say(f"kt-launch: starting node{ctrl}b\n")
    console.err.drain(time.monotonic() + 5)
    text = raw.getvalue().decode()
    assert text.count("kt-launch: starting") == len(CONTROLS) and not RAW.search(text), repr(text)
