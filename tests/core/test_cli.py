"""The CLI end to end: exit codes, dry-run text and JSON, the seed profile, no heavy imports."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kt_launch.cli import main
from kt_launch.render.argv import render_command
from core.support import plan_for

REPO = Path(__file__).resolve().parents[2]
SEED_PROFILE = REPO / "configs" / "deepseek-v2-lite-lora.yaml"


def run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_seed_profile_dry_run_json(capsys, host_file):
    rc, out, err = run(capsys, "--profile", str(SEED_PROFILE), "--dry-run", "--json", "--no-check",
                       "--host-facts", str(host_file))
    assert rc == 0, err
    doc = json.loads(out)
    argv = doc["argv"]
    flag = lambda f: argv[argv.index(f) + 1]
    assert flag("--kt-num-gpu-experts") == "0"
    assert 1 <= int(flag("--kt-cpuinfer")) <= 16
    assert "--disable-cuda-graph" in argv
    assert flag("--kt-moe-lora-path").endswith("moe_lora.pt")
    assert (flag("--kt-moe-lora-rank"), flag("--kt-moe-lora-alpha"), flag("--kt-moe-sft-method")) == \
        ("8", "16.0", "AMXBF16_SFT")
    assert flag("--lora-paths").endswith("checkpoint-133")
    assert argv[1:3] == ["-m", "sglang.launch_server"]
    res = doc["resolved"]
    assert res["kt.num_gpu_experts"]["source"] == "derived"
    assert res["kt.cpuinfer"] == {"value": 14, "source": "host", "reason": res["kt.cpuinfer"]["reason"]}
    assert res["server.disable_cuda_graph"]["source"] == "derived"
    assert res["moe_lora.rank"]["source"] == "profile"
    assert doc["flavor"] == "kt-moe-lora" and doc["env"] == {"CUDA_VISIBLE_DEVICES": "3"}
    assert all({"level", "code", "message", "fix"} <= set(f) for f in doc["findings"])


def test_dry_run_text_shows_command_table_and_findings(capsys, host_file):
    rc, out, _ = run(capsys, "--profile", str(SEED_PROFILE), "--dry-run", "--no-check", "--host-facts", str(host_file))
    assert rc == 0
    cmd_line = out.split("command:\n", 1)[1].splitlines()[0].strip()
    argv = shlex.split(cmd_line)
    assert argv[1:3] == ["-m", "sglang.launch_server"] and "--kt-cpuinfer" in argv
    assert "kt.cpuinfer" in out and "KT-W121" in out and "CUDA_VISIBLE_DEVICES=3" in out


def test_profile_by_name_and_env_precedence(capsys, host_file, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("KT_LAUNCH_KT__CPUINFER", "7")
    rc, out, _ = run(capsys, "--profile", "deepseek-v2-lite-lora", "--dry-run", "--json", "--no-check",
                     "--host-facts", str(host_file), "--set", "server.port=31000")
    doc = json.loads(out)
    assert doc["resolved"]["kt.cpuinfer"]["source"] == "env" and doc["resolved"]["kt.cpuinfer"]["value"] == 7
    assert doc["resolved"]["server.port"]["source"] == "cli"


@pytest.mark.parametrize("argv,needle", [
    (["--profile", "no-such-profile", "--dry-run"], "no profile of that name"),
    (["--profile", "/nonexistent/x.yaml", "--dry-run"], "no such file"),
    (["--dry-run"], "--profile"),
    (["--profile", str(SEED_PROFILE), "--set", "kt.cpuinfer=lots", "--dry-run"], "kt.cpuinfer"),
    (["--profile", str(SEED_PROFILE), "--set", "kt.bogus=1", "--dry-run"], "unknown key 'kt.bogus'"),
    (["--profile", str(SEED_PROFILE), "--set", "novalue", "--dry-run"], "KEY=VALUE"),
    (["--profile", str(SEED_PROFILE), "--json"], "--json needs --dry-run"),
    (["--profile", str(SEED_PROFILE), "--host-facts", "/nonexistent.json", "--dry-run"], "--host-facts"),
])
def test_bad_input_exits_2_with_a_message(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert needle in err and "Traceback" not in err


def test_bad_host_facts_file_names_the_field(capsys, tmp_path):
    p = tmp_path / "h.json"
    p.write_text(json.dumps({"cpu": {"physical_cores": "x", "logical_cpus": 2}, "memory": {}}))
    rc, _, err = run(capsys, "--profile", str(SEED_PROFILE), "--host-facts", str(p), "--dry-run")
    assert rc == 2 and "cpu.physical_cores" in err


def test_plan_errors_exit_3_and_launch_nothing(capsys, host_file, tmp_path):
    marker = tmp_path / "launched"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    rc, out, err = run(capsys, "--profile", str(SEED_PROFILE), "--no-check", "--host-facts", str(host_file),
                       "--set", "kt.num_gpu_experts=3", "--set", f"runtime.python={fake}")
    assert rc == 3 and "KT-E101" in err and not marker.exists()
    rc, out, _ = run(capsys, "--profile", str(SEED_PROFILE), "--no-check", "--host-facts", str(host_file),
                     "--set", "kt.num_gpu_experts=3", "--dry-run")
    assert rc == 3 and "KT-E101" in out


def test_exec_replaces_the_process_with_the_argv(tmp_path, host_file):
    """A real exec: the fake interpreter records the argv and env it was given."""
    rec = tmp_path / "rec.json"
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'cvd': os.environ.get('CUDA_VISIBLE_DEVICES')}}, open({str(rec)!r}, 'w'))\n")
    fake.chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "kt_launch", "--profile", str(SEED_PROFILE), "--no-check",
                        "--host-facts", str(host_file), "--set", f"runtime.python={fake}", "--", "--log-level", "info"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    got = json.loads(rec.read_text())
    assert got["argv"][:2] == ["-m", "sglang.launch_server"] and got["argv"][-2:] == ["--log-level", "info"]
    assert got["cvd"] == "3"


def test_dry_run_imports_no_torch_sglang_or_kt_kernel(host_file):
    code = ("import sys; from kt_launch.cli import main; rc = main(['--profile', %r, '--dry-run', '--json', "
            "'--host-facts', %r]); heavy = [m for m in ('torch', 'sglang', 'kt_kernel', 'numpy') if m in sys.modules]; "
            "print('HEAVY', heavy)") % (str(SEED_PROFILE), str(host_file))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_passthrough_repeating_a_generated_flag_is_refused(capsys, host_file):
    rc, out, _ = run(capsys, "--profile", str(SEED_PROFILE), "--dry-run", "--no-check", "--host-facts", str(host_file),
                     "--", "--kt-cpuinfer", "99")
    assert rc == 3 and "KT-E303" in out and "--set kt.cpuinfer" in out


def test_upstream_flavor_refuses_moe_lora(capsys, host_file):
    rc, out, _ = run(capsys, "--profile", str(SEED_PROFILE), "--dry-run", "--no-check", "--host-facts", str(host_file),
                     "--set", "runtime.flavor=sglang")
    assert rc == 3 and "KT-E301" in out and "moe_lora.path cannot be expressed on sglang" in out


def test_schema_command(capsys):
    rc, out, _ = run(capsys, "schema")
    assert rc == 0 and "moe_lora" in json.loads(out)["properties"]


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(path=_text.filter(lambda s: s.strip() != ""), extra=st.lists(_text, max_size=6))
def test_shlex_text_round_trips_to_the_same_argv(tmp_path_factory, path, extra):
    d = tmp_path_factory.mktemp("rt")
    prof = d / "p.yaml"
    prof.write_text(json.dumps({"model": {"path": path}, "kt": {"weight_path": path, "method": "AMXINT8"},
                                "server": {"extra_args": extra}}))
    plan = plan_for(prof)
    argv = render_command(plan).argv
    assert shlex.split(shlex.join(argv)) == argv


@pytest.mark.parametrize("cpu", [
    {"physical_cores": 8, "logical_cpus": 10**9},
    {"physical_cores": 8, "logical_cpus": 16, "usable_cpus": [10**12]},
])
def test_impossible_host_facts_are_exit_2_not_a_huge_allocation(capsys, tmp_path, cpu):
    p = tmp_path / "h.json"
    p.write_text(json.dumps({"cpu": cpu, "memory": {"total_bytes": 1, "available_bytes": 1}}))
    rc, _, err = run(capsys, "--profile", str(SEED_PROFILE), "--host-facts", str(p), "--dry-run", "--no-check")
    assert rc == 2 and "cpu." in err


def test_profile_name_wins_over_a_directory_of_that_name(tmp_path, monkeypatch, capsys):
    """`make demo` builds ./demo/ (the synthetic tree) and then asks for the profile NAME demo."""
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    from kt_launch.facts.locate import BUNDLED, find_profile

    assert find_profile("demo", {"HOME": str(tmp_path)}, tmp_path) == BUNDLED / "demo.yaml"


def test_every_command_has_a_parser_and_a_row_in_the_dispatch_table():
    """cli.py parses, kt_launch/commands/ runs: each parser's command has one module in the table, with a run()."""
    import importlib

    from kt_launch.cli import subparsers
    from kt_launch.commands import COMMANDS, LAUNCH

    assert set(subparsers()) == set(COMMANDS)
    for module in [*COMMANDS.values(), LAUNCH]:
        assert callable(importlib.import_module(module).run), module
