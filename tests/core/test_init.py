"""`kt-launch init`: the profile it writes for a tiny real checkpoint plans (check exit 0), says in its comments
what the real plan resolves, maps each --lora by content, never overwrites, and turns bad input into exit 2."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools import synthetic
from kt_launch.cli import main
from kt_launch.render.profile_yaml import Line, profile_yaml
from core.support import TWO_SOCKET, XEON16

DERIVED = re.compile(r"^  (\w+): null +# -> (.+?) \((\w+)\): (.*)$")


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def demo(tmp_path):
    root = tmp_path / "demo"
    synthetic.demo(root)
    return root


def init(capsys, tmp_path, *argv, name="my.yaml"):
    out = tmp_path / name
    rc, stdout, err = run(capsys, "init", *argv, "-o", out)
    return rc, out, err


def check_json(capsys, profile, *extra):
    rc, out, err = run(capsys, "check", "--profile", profile, "--json", *extra)
    return rc, json.loads(out), err


def derived_comments(text: str) -> dict[str, tuple[str, str, str]]:
    """`key: null  # -> VALUE (SOURCE): REASON` lines by dotted key (section from the last unindented line)."""
    got, section = {}, None
    for line in text.splitlines():
        if re.match(r"^\w+:$", line):
            section = line[:-1]
        elif (m := DERIVED.match(line)) and section:
            got[f"{section}.{m[1]}"] = (m[2], m[3], m[4])
    return got


def shown(v) -> str:
    return "unset" if v is None else v if isinstance(v, str) else json.dumps(v)


def test_demo_model_profile_checks_and_dry_runs(capsys, tmp_path, demo, host_file):
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host_file)
    assert rc == 0, err
    text = out.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    doc = yaml.safe_load(text)
    assert doc["model"]["path"] == str(demo / "model")
    assert doc["kt"]["weight_path"] == str(demo / "kt-amxint8")  # the converted dir beside the model
    assert doc["kt"]["method"] == "AMXINT8"  # its layout: one INT8 byte per weight
    for key in ("cpuinfer", "threadpool_count", "num_gpu_experts"):
        assert doc["kt"][key] is None
    rc, plan, err = check_json(capsys, out, "--host-facts", host_file)
    assert rc == 0, (err, plan["findings"])
    rc, _, err = run(capsys, "--profile", out, "--dry-run", "--no-check", "--host-facts", host_file)
    assert rc == 0, err
    comments = derived_comments(text)
    assert {"kt.cpuinfer", "kt.threadpool_count", "kt.num_gpu_experts", "runtime.python"} <= set(comments)
    for key, (value, source, reason) in comments.items():  # every comment is what check resolves from the file
        r = plan["resolved"][key]
        assert (value, source, reason) == (shown(r["value"]), r["source"], r["reason"]), key
    assert comments["kt.cpuinfer"][0] == str(XEON16["cpu"]["physical_cores"] - 2)  # 16 cores - the reserve of 2


def test_this_machine_comments_match_its_plan(capsys, tmp_path, demo):
    rc, out, err = init(capsys, tmp_path, demo / "model")
    assert rc in (0, 3), err
    rc_check, plan, _ = check_json(capsys, out)
    assert rc_check == rc  # init's verdict is the verdict of `check` on the file it wrote
    got = derived_comments(out.read_text())["kt.cpuinfer"]
    assert got == (shown(plan["resolved"]["kt.cpuinfer"]["value"]), plan["resolved"]["kt.cpuinfer"]["source"],
                   plan["resolved"]["kt.cpuinfer"]["reason"])


def test_stdout_without_output_and_header_names_the_verdict(capsys, demo, host_file):
    rc, text, err = run(capsys, "init", demo / "model", "--host-facts", host_file)
    assert rc == 0, err
    assert text.splitlines()[0].startswith("# yaml-language-server: $schema=")
    assert re.search(r"^# Plan now: OK", text, re.M)
    assert yaml.safe_load(text)["model"]["path"] == str(demo / "model")


def test_two_numa_host_plans_one_pool_per_node_and_says_the_weights_disagree(capsys, tmp_path, demo):
    host = tmp_path / "two.json"
    host.write_text(json.dumps(TWO_SOCKET))
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host)
    assert rc == 3  # the demo weights have one NUMA partition; this host plans two pools
    text = out.read_text()
    assert "KT-E221" in text and "BLOCKED" in text
    assert derived_comments(text)["kt.threadpool_count"][:2] == ("2", "host")


def test_moe_lora_file_and_peft_dir_kt_moe_lora(capsys, tmp_path, demo, host_file):
    synthetic.peft_lora(demo / "lora4", r=4, alpha=8.0)
    rc, out, err = init(capsys, tmp_path, demo / "model", "--lora", demo / "moe_lora.pt", "--lora", demo / "lora4",
                        "--method", "amxbf16_sft", "--host-facts", host_file)
    assert rc == 0, err
    doc = yaml.safe_load(out.read_text())
    assert doc["moe_lora"] == {"path": str(demo / "moe_lora.pt"), "rank": 4, "alpha": 8.0, "sft_method": "AMXBF16_SFT"}
    assert doc["lora"]["paths"] == [str(demo / "lora4")]
    assert doc["runtime"]["flavor"] == "kt-moe-lora"
    assert "kt.numa_nodes" not in derived_comments(out.read_text())  # the fork has no --kt-numa-nodes
    rc, plan, err = check_json(capsys, out, "--host-facts", host_file)
    assert rc == 0, plan["findings"]
    argv = plan["argv"]
    assert argv[argv.index("--kt-moe-lora-rank") + 1] == "4"


def test_expert_adapter_dir_is_sglang_kt_moe_lora(capsys, tmp_path, demo, host_file):
    synthetic.expert_adapter(demo / "expert", r=16, alpha=32.0)
    rc, out, err = init(capsys, tmp_path, demo / "model", "--lora", demo / "expert", "--method", "AMXBF16_SFT",
                        "--host-facts", host_file)
    assert rc == 0, err
    doc = yaml.safe_load(out.read_text())
    assert doc["moe_lora"]["path"] == str(demo / "expert")
    assert (doc["moe_lora"]["rank"], doc["moe_lora"]["alpha"]) == (16, 32.0)
    assert doc["runtime"]["flavor"] == "sglang-kt"
    assert "lora" not in doc
    assert check_json(capsys, out, "--host-facts", host_file)[0] == 0


def test_plain_peft_dir_goes_to_lora_paths(capsys, tmp_path, demo, host_file):
    rc, out, err = init(capsys, tmp_path, demo / "model", "--lora", demo / "lora", "--host-facts", host_file)
    assert rc == 0, err
    doc = yaml.safe_load(out.read_text())
    assert doc["lora"]["paths"] == [str(demo / "lora")] and "moe_lora" not in doc
    assert "r=8, lora_alpha=16.0" in out.read_text()


def test_method_picks_among_several_converted_dirs(capsys, tmp_path, demo, host_file):
    synthetic.amx_weights(demo / "kt-amxint4", bits=4)
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host_file)
    doc = yaml.safe_load(out.read_text())
    assert (doc["kt"]["method"], doc["kt"]["weight_path"]) == (None, None)  # two methods beside: not guessed
    assert rc == 3
    rc, out, err = init(capsys, tmp_path, demo / "model", "--method", "AMXINT4", "--host-facts", host_file,
                        name="int4.yaml")
    assert rc == 0, err
    doc = yaml.safe_load(out.read_text())
    assert (doc["kt"]["method"], doc["kt"]["weight_path"]) == ("AMXINT4", str(demo / "kt-amxint4"))


def test_hf_method_reads_the_model_dir(capsys, tmp_path, demo, host_file):
    rc, out, err = init(capsys, tmp_path, demo / "model", "--method", "BF16", "--host-facts", host_file)
    assert rc == 0, err
    text = out.read_text()
    assert yaml.safe_load(text)["kt"]["weight_path"] is None
    assert derived_comments(text)["kt.weight_path"][0] == str(demo / "model")


def test_missing_converted_weights_are_named_not_guessed(capsys, tmp_path, host_file):
    synthetic.hf_model(tmp_path / "alone" / "model")
    rc, out, err = init(capsys, tmp_path, tmp_path / "alone" / "model", "--method", "AMXINT8", "--host-facts",
                        host_file)
    assert rc == 3 and "errors" in err  # written, and said to be blocked
    text = out.read_text()
    assert yaml.safe_load(text)["kt"]["weight_path"] is None
    assert "no AMXINT8 weights beside the model" in text and "KT-E114" in text


def test_profile_keys_from_the_environment_stay_out(capsys, tmp_path, demo, host_file, monkeypatch):
    monkeypatch.setenv("KT_LAUNCH_KT__CPUINFER", "3")
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host_file)
    assert rc == 0, err
    assert derived_comments(out.read_text())["kt.cpuinfer"][:2] == ("14", "host")  # not the shell's 3


def test_relative_model_dir_stays_relative(capsys, tmp_path, demo, host_file, monkeypatch):
    monkeypatch.chdir(demo.parent)
    rc, out, err = init(capsys, tmp_path, "demo/model", "--host-facts", host_file)
    assert rc == 0, err
    doc = yaml.safe_load(out.read_text())
    assert (doc["model"]["path"], doc["kt"]["weight_path"]) == ("demo/model", "demo/kt-amxint8")


def test_never_overwrites_without_force(capsys, tmp_path, demo, host_file):
    out = tmp_path / "mine.yaml"
    out.write_text("model: {path: /keep/me}\n")
    rc, _, err = run(capsys, "init", demo / "model", "-o", out, "--host-facts", host_file)
    assert rc == 2 and str(out) in err and "--force" in err
    assert out.read_text() == "model: {path: /keep/me}\n"
    rc, _, err = run(capsys, "init", demo / "model", "-o", out, "--force", "--host-facts", host_file)
    assert rc == 0, err
    assert yaml.safe_load(out.read_text())["model"]["path"] == str(demo / "model")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def _bad_inputs(root: Path) -> dict[str, list]:
    os.mkfifo(root / "fifo")
    (root / "empty").mkdir()
    synthetic.peft_lora(root / "badcfg")
    (root / "badcfg" / "adapter_config.json").write_text("{not json")
    synthetic.peft_lora(root / "fifocfg")
    os.unlink(root / "fifocfg" / "adapter_config.json")
    os.mkfifo(root / "fifocfg" / "adapter_config.json")
    m = root / "demo" / "model"
    return {
        "missing dir": [root / "nope"],
        "no config.json": [root / "empty"],
        "FIFO model dir": [root / "fifo"],
        "FIFO lora": [m, "--lora", root / "fifo"],
        "lora without adapter_config.json": [m, "--lora", root / "empty"],
        "unreadable adapter config": [m, "--lora", root / "badcfg"],
        "FIFO adapter config": [m, "--lora", root / "fifocfg"],
        "unknown method": [m, "--method", "AMXINT3"],
        "SFT method without a MoE LoRA": [m, "--method", "AMXINT8_SFT"],
        "two MoE LoRAs": [m, "--lora", root / "demo" / "moe_lora.pt", "--lora", root / "demo" / "moe_lora.pt"],
        "missing host facts": [m, "--host-facts", root / "nope.json"],
    }


def test_bad_input_is_exit_2_with_a_message(capsys, tmp_path, demo):
    for what, argv in _bad_inputs(tmp_path).items():
        rc, out, err = run(capsys, "init", *argv)
        assert rc == 2, (what, err)
        assert err.startswith("kt-launch: error: ") and "Traceback" not in err, what
        assert out == "", what


def test_real_subprocess(tmp_path, demo, host_file):
    exe = Path(sys.executable).with_name("kt-launch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kt_launch"]
    out = tmp_path / "sub.yaml"
    p = subprocess.run([*cmd, "init", str(demo / "model"), "-o", str(out), "--host-facts", str(host_file)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert str(out) in p.stderr and p.stdout == ""
    c = subprocess.run([*cmd, "check", "--profile", str(out), "--host-facts", str(host_file)], capture_output=True,
                       text=True, timeout=120)
    assert c.returncode == 0, c.stdout + c.stderr


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    text = capsys.readouterr().out
    for opt in ("--lora", "--method", "--output", "--force", "--host-facts", "MODEL_DIR"):
        assert opt in text
    assert "lora.paths" in text and "moe_lora.path" in text  # how a LoRA maps onto the profile


# -- the YAML writer -------------------------------------------------------------------------

_PATHS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(path=_PATHS, names=st.lists(_PATHS, max_size=3))
def test_any_path_reads_back_the_same(path, names):
    text = profile_yaml(["first line", "a\nbroken header"], [Line("model.path", path, "a\ncomment # x"),
                                                              Line("lora.paths", names), Line("kt.cpuinfer", None, "c")])
    doc = yaml.safe_load(text)
    assert doc == {"model": {"path": path}, "lora": {"paths": names}, "kt": {"cpuinfer": None}}


@given(alpha=st.floats(min_value=1e-30, max_value=1e30, allow_nan=False), rank=st.integers(1, 10**9))
def test_numbers_read_back_as_numbers(alpha, rank):
    doc = yaml.safe_load(profile_yaml([], [Line("moe_lora.alpha", alpha), Line("moe_lora.rank", rank)]))
    assert doc == {"moe_lora": {"alpha": alpha, "rank": rank}}


# -- issue 22 item 5: a plain HF dir (no converted weights beside it) gets a method that reads it -------------

AVX2_GPU = {**XEON16, "cpu": {**XEON16["cpu"], "model": "AMD EPYC (AVX2)", "flags": ["avx2", "fma"]}}


@pytest.mark.parametrize("dtype,method", [("BF16", "BF16"), ("F8_E4M3", "FP8")])
def test_plain_hf_dir_gets_the_checkpoint_method_and_passes_check(capsys, tmp_path, dtype, method):
    model = synthetic.hf_model(tmp_path / "plain" / "model", expert_dtype=dtype)
    host = tmp_path / "host.json"
    host.write_text(json.dumps(XEON16))
    rc, out, err = init(capsys, tmp_path, model, "--host-facts", host)
    assert rc == 0, err
    doc = yaml.safe_load(out.read_text())
    assert doc["kt"]["method"] == method and doc["kt"].get("weight_path") is None
    text = out.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("  method:"))
    assert "nothing to convert" in line and "kt-launch convert" in line and "AMXINT8" in line and "AMXINT4" in line
    assert "less RAM" in line
    rc, doc, err = check_json(capsys, out, "--host-facts", host)
    assert rc == 0, doc["findings"]


def test_demo_on_an_avx2_cpu_reads_the_checkpoint(capsys, tmp_path, demo):
    """The demo has AMXINT8 weights beside the model, but an AVX2 CPU's kt-kernel has no AMXINT8: BF16 instead."""
    host = tmp_path / "host.json"
    host.write_text(json.dumps(AVX2_GPU))
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host)
    assert rc == 0, err
    text = out.read_text()
    assert yaml.safe_load(text)["kt"]["method"] == "BF16"
    assert "does not implement AMXINT8" in text
    rc, doc, err = check_json(capsys, out, "--host-facts", host)
    assert rc == 0, doc["findings"]
    # on an AMX host the converted weights beside the model are used, as before
    host.write_text(json.dumps(XEON16))
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host, name="amx.yaml")
    assert yaml.safe_load(out.read_text())["kt"]["method"] == "AMXINT8"


def test_an_inherited_avx2_variant_reads_the_checkpoint(capsys, tmp_path, demo, monkeypatch):
    """`export KT_KERNEL_CPU_VARIANT=avx2` on any CPU: the server inherits it, so init plans for kt-kernel's avx2
    build (no AMXINT8) on this machine; a --host-facts host is another machine, whose environment is its own."""
    monkeypatch.setenv("KT_KERNEL_CPU_VARIANT", "avx2")
    rc, out, err = init(capsys, tmp_path, demo / "model")  # rc 3 where this machine's port 30000 is taken
    text = out.read_text()
    assert yaml.safe_load(text)["kt"]["method"] == "BF16", err
    assert "avx2 variant on this CPU does not implement AMXINT8" in text and "KT-E240" not in text
    host = tmp_path / "host.json"
    host.write_text(json.dumps(XEON16))
    rc, out, err = init(capsys, tmp_path, demo / "model", "--host-facts", host, name="amx.yaml")
    assert rc == 0, err
    assert yaml.safe_load(out.read_text())["kt"]["method"] == "AMXINT8"
