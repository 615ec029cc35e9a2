"""`kt-launch calibrate` against the sglang-kt stand-in (tests/standin): the recorder writes a real .pt through torch
in the backend venv, kt-launch checks and reduces it there, and the next plan's per-layer GPU experts come from
kt-kernel's own generate_gpu_experts_masks (checked here against a direct call of it). Also: kt.expert_placement /
kt.expert_stats refusals (wrong shape naming both shapes, frequency without stats) and hostile prompts files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.cli import main
from operate.support import Launch, free_port, pid_gone, write_host, write_profile
from standin.support import backend_python, make_standin

REPO = Path(__file__).resolve().parents[2]
BACKEND = backend_python()
needs_backend = pytest.mark.skipif(BACKEND is None, reason="the backend test venv (torch, kt-kernel) is not built")


def _profile(d: Path, python, port: int, **kt) -> Path:
    return write_profile(d, {"model": {"path": str(d / "model"), "served_name": "tiny"},
                             "kt": {"weight_path": "/nonexistent/kt", "method": "AMXINT8", "num_gpu_experts": 3, **kt},
                             "server": {"host": "127.0.0.1", "port": port},
                             "runtime": {"python": str(python), "flavor": "sglang-kt"}})


def _calibrate(d: Path, env: dict, *extra: str) -> Launch:
    launch = Launch(d, ["calibrate", "--profile", str(d / "profile.yaml"), "--host-facts", str(d / "host.json"),
                        "--no-check", "--python", str(BACKEND), *extra],
                    {"KT_LAUNCH_CACHE_DIR": str(d / "cache"), "STANDIN_DIR": str(d), "STANDIN_READY_AFTER": "0",
                     **env})
    return launch


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One calibration run (4 requests), shared: its launch, the dir, and the stored file."""
    if BACKEND is None:
        pytest.skip("the backend test venv is not built")
    d = tmp_path_factory.mktemp("calibrate")
    synthetic.hf_model(d / "model")
    write_host(d)
    _profile(d, make_standin(d, BACKEND), free_port())
    launch = _calibrate(d, {}, "--requests", "4", "--json")
    try:
        rc = launch.finish(timeout=120)
    finally:
        if launch.proc.poll() is None:
            launch.kill_all()
    return launch, d, rc


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """Stats files only torch writes, made in one backend run: a recorder dict of another model's shape, and a .pt
    whose pickle would run a command when unpickled without weights_only (it touches `ran` beside it)."""
    if BACKEND is None:
        pytest.skip("the backend test venv is not built")
    d = tmp_path_factory.mktemp("torch-files")
    code = ("import os,sys,torch\nd=sys.argv[1]\n"
            "torch.save({'logical_count': torch.ones(2, 6, 8, dtype=torch.int32)}, d + '/other-model.pt')\n"
            "class E:\n  def __reduce__(self): return (os.system, ('touch ' + d + '/ran',))\n"
            "torch.save({'logical_count': E()}, d + '/evil.pt')\n"
            "t = torch.ones(2, 4, 8, dtype=torch.int32); t[:, 0] = 100\n"  # counts on dense layer 0, the heaviest
            "torch.save({'logical_count': t}, d + '/dense-counted.pt')\n")
    subprocess.run([str(BACKEND), "-c", code, str(d)], check=True, timeout=120)
    return d


@needs_backend
def test_calibrate_records_checks_and_stores_and_stops_the_server(calibrated):
    launch, d, rc = calibrated
    assert rc == 0, launch.err
    doc = json.loads(launch.out)  # stdout is the result's alone: the server's output went to stderr
    stored = Path(doc["path"])
    assert stored.is_file() and stored.parent.parent == d / "cache" / "calibrations"
    assert doc["shape"][1:] == [4, 8] and doc["answered"] == 4 and doc["routed_tokens"] > 0
    # all 9 GPU experts on the MoE layers: the stand-in's dense layer 0 records nothing, as sglang's does
    assert len(doc["per_layer"]) == 3 and sum(doc["per_layer"]) == 9
    assert doc["served_share"] > doc["uniform_served_share"]  # the stand-in's counts are skewed
    section = (REPO / "docs" / "JSON.md").read_text().split("## `kt-launch calibrate --json`")[1]
    assert set(doc) == set(re.findall(r"^\| `(\w+)` \|", section, re.M))  # docs/JSON.md documents every field
    assert (d / "requests").read_text().strip() == "4"
    assert pid_gone(int((d / "pid").read_text())), "the server was left running"
    assert "--expert-distribution-recorder-mode" in json.loads((d / "argv.json").read_text())
    assert not list(Path("/tmp").glob(f"kt-launch-calibrate-*/{stored.name}"))
    # --list names it (and starts nothing)
    listed = subprocess.run([os.sys.executable, "-m", "kt_launch", "calibrate", "--profile", str(d / "profile.yaml"),
                             "--list", "--json"], capture_output=True, text=True, cwd=d,
                            env={**os.environ, "KT_LAUNCH_CACHE_DIR": str(d / "cache")}, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [c["workload"] for c in json.loads(listed.stdout)["calibrations"]] == ["default"]


@needs_backend
def test_the_next_plan_renders_frequency_with_kt_kernels_own_mask(calibrated, monkeypatch, capsys):
    launch, d, rc = calibrated
    assert rc == 0, launch.err
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(d / "cache"))
    monkeypatch.chdir(d)
    args = ["--profile", str(d / "profile.yaml"), "--host-facts", str(d / "host.json"), "--set",
            "kt.expert_placement=auto", "--set", f"runtime.python={BACKEND}"]
    assert main(["check", *args, "--json"]) in (0, 3)  # check runs the worker (the plan's other files are missing)
    capsys.readouterr()
    main([*args, "--dry-run", "--json"])  # --dry-run: the cached answer only
    doc = json.loads(capsys.readouterr().out)
    argv = doc["argv"]
    stored = argv[argv.index("--init-expert-location") + 1]
    assert argv[argv.index("--kt-expert-placement-strategy") + 1] == "frequency"
    assert "auto: calibration 'default'" in doc["resolved"]["kt.expert_placement"]["reason"]
    place = doc["placement"]
    assert place["strategy"] == "frequency" and place["moe_layers"] == [1, 2, 3] and place["gpu_experts_total"] == 9
    # the same numbers from kt-kernel's mask function called directly on the stored file
    code = ("import json,sys,torch; from kt_kernel import generate_gpu_experts_masks as g; "
            "t=torch.load(sys.argv[1],weights_only=True)['logical_count'].sum(0).float(); m=g(t,9); m[0,:]=True; "
            "print(json.dumps(m[1:].sum(1).tolist()))")
    direct = subprocess.run([str(BACKEND), "-c", code, stored], capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert place["per_layer"] == json.loads(direct.stdout.strip().splitlines()[-1])
    assert place["served_share"] > place["uniform_served_share"] > 0
    # frequency with the workload's name: the same file and the same mask (the cached answer again)
    main([*args, "--set", "kt.expert_placement=frequency", "--set", "kt.expert_stats=default", "--dry-run", "--json"])
    named = json.loads(capsys.readouterr().out)
    assert named["argv"][named["argv"].index("--init-expert-location") + 1] == stored
    assert named["placement"]["per_layer"] == place["per_layer"]
    assert "KT-W584" not in [f["code"] for f in doc["findings"]]


@needs_backend
def test_a_fleet_profile_is_calibrated_by_one_server_and_its_replicas_find_it(tmp_path, launches):
    """A fleet profile: its fleet section is set aside (said on stderr), one server records, and the calibration is
    the model's: --list on the same fleet profile names it, and the fleet's own --dry-run places frequency with it."""
    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    profile = _profile(tmp_path, make_standin(tmp_path, BACKEND), free_port())
    import yaml

    doc = yaml.safe_load(profile.read_text())
    doc["fleet"] = {"replicas": "per-numa", "allow_cpu_only": True}
    profile.write_text(yaml.safe_dump(doc))
    launch = _calibrate(tmp_path, {}, "--requests", "2", "--name", "fleet-chat")
    launches.append(launch)
    assert launch.finish(timeout=120) == 0, launch.err
    assert "fleet section is set aside" in launch.err
    assert pid_gone(int((tmp_path / "pid").read_text())), "the server was left running"
    (stored,) = (tmp_path / "cache" / "calibrations").glob("*/fleet-chat.pt")
    env = {**os.environ, "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache")}
    listed = subprocess.run([os.sys.executable, "-m", "kt_launch", "calibrate", "--profile", str(profile), "--list",
                             "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [c["workload"] for c in json.loads(listed.stdout)["calibrations"]] == ["fleet-chat"]
    assert "set aside" not in listed.stderr  # --list starts nothing, so it has nothing to say about the fleet
    planned = subprocess.run([os.sys.executable, "-m", "kt_launch", "--profile", str(profile), "--host-facts",
                              str(tmp_path / "host.json"), "--set", "kt.expert_placement=auto", "--set",
                              f"runtime.python={BACKEND}", "--dry-run", "--json"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    fleet = json.loads(planned.stdout)
    assert fleet["instances"], planned.stderr
    for inst in fleet["instances"]:
        argv = inst["argv"]
        assert argv[argv.index("--kt-expert-placement-strategy") + 1] == "frequency", inst
        assert argv[argv.index("--init-expert-location") + 1] == str(stored)


@needs_backend
def test_ctrl_c_during_the_workload_stops_the_server_and_stores_nothing(tmp_path, launches):
    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    _profile(tmp_path, make_standin(tmp_path, BACKEND), free_port())
    launch = _calibrate(tmp_path, {"STANDIN_MODE": "slow", "STANDIN_TTFT_S": "0.5"}, "--requests", "1000",
                        "--grace-period", "10")
    launches.append(launch)
    launch.wait_for(lambda: "request 1/1000" in launch.err, 60, "the first request")
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=60) == 130
    assert pid_gone(int((tmp_path / "pid").read_text()))
    assert not list((tmp_path / "cache").rglob("*.pt")) and "Traceback" not in launch.err


@needs_backend
def test_a_recorded_file_of_the_wrong_shape_is_refused_and_not_stored(tmp_path, launches):
    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    _profile(tmp_path, make_standin(tmp_path, BACKEND), free_port())
    launch = _calibrate(tmp_path, {"STANDIN_RECORDER_SHAPE_WRONG": "1"}, "--requests", "1", "--name", "chat")
    launches.append(launch)
    assert launch.finish(timeout=120) == 1
    assert "[1, 4, 7]" in launch.err and "[*, 4, 8]" in launch.err, launch.err
    assert not list((tmp_path / "cache").rglob("chat.pt"))
    assert pid_gone(int((tmp_path / "pid").read_text()))


@needs_backend
def test_a_wrong_shape_stats_file_is_refused_before_launch_naming_both_shapes(tmp_path, monkeypatch, capsys,
                                                                             torch_files):
    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    bad = torch_files / "other-model.pt"
    prof = _profile(tmp_path, BACKEND, free_port(), expert_placement="frequency", expert_stats=str(bad))
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--profile", str(prof), "--host-facts", str(tmp_path / "host.json")]
    assert main([*args, "--dry-run"]) in (0, 3)
    assert "KT-I580" in capsys.readouterr().out  # --dry-run starts no interpreter: not checked, said so
    assert main(["check", *args]) == 3
    out = capsys.readouterr().out
    assert "KT-E581" in out and "[2, 6, 8]" in out and "[*, 4, 8]" in out
    assert main([*args, "--dry-run"]) == 3  # the cached answer now
    assert "KT-E581" in capsys.readouterr().out
    assert main(args) == 3  # a launch is blocked
    assert "KT-E581" in capsys.readouterr().err
    # counts on a dense layer: kt-kernel's global top-k spends 8 of the 9 GPU experts there (KT-W584, no error)
    assert main(["check", *args, "--set", f"kt.expert_stats={torch_files / 'dense-counted.pt'}", "--json"]) in (0, 3)
    doc = json.loads(capsys.readouterr().out)
    assert "KT-W584" in [f["code"] for f in doc["findings"]] and sum(doc["placement"]["per_layer"]) == 1


def test_frequency_without_stats_is_an_error_and_auto_falls_back_to_uniform(tmp_path, monkeypatch, capsys):
    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    prof = _profile(tmp_path, "/nonexistent/python", free_port(), expert_placement="frequency")
    args = ["--profile", str(prof), "--host-facts", str(tmp_path / "host.json"), "--dry-run", "--json"]
    main(args)
    doc = json.loads(capsys.readouterr().out)
    assert "KT-E580" in [f["code"] for f in doc["findings"]]
    main([*args, "--set", "kt.expert_placement=auto"])
    doc = json.loads(capsys.readouterr().out)
    r = doc["resolved"]["kt.expert_placement"]
    assert r["value"] == "uniform" and "no calibration for this model" in r["reason"]
    assert doc["placement"]["per_layer"] == [3, 3, 3] and "--init-expert-location" not in doc["argv"]
    main([*args, "--set", "kt.expert_placement=auto", "--set", "kt.expert_stats=creative"])
    doc = json.loads(capsys.readouterr().out)
    assert "KT-E584" in [f["code"] for f in doc["findings"]]


@pytest.mark.parametrize("content, why", [
    (None, "FIFO"),
    (b"x" * ((16 << 20) + 1), "bytes"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n', "line 2"),
    (b'{"messages": [{"role": "robot", "content": "hi"}]}\n', "line 1"),
])
def test_hostile_prompts_files_are_exit_2_naming_the_file(tmp_path, monkeypatch, capsys, content, why):
    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    prof = _profile(tmp_path, "/nonexistent/python", free_port())
    prompts = tmp_path / "prompts.jsonl"
    if content is None:
        os.mkfifo(prompts)
    else:
        prompts.write_bytes(content)
    rc = main(["calibrate", "--profile", str(prof), "--host-facts", str(tmp_path / "host.json"), "--no-check",
               "--prompts", str(prompts)])
    err = capsys.readouterr().err
    assert rc == 2 and str(prompts) in err and why in err, err
    assert "Traceback" not in err


def test_prompts_files_read_chat_jsonl_and_plain_text(tmp_path):
    from kt_launch.facts.prompts import read_prompts

    p = tmp_path / "p.jsonl"
    p.write_text('{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"}]}\n\n'
                 '[{"role": "user", "content": "b"}]\n"c"\n{"prompt": "d"}\n')
    got = read_prompts(p)
    assert [m[-1]["content"] for m in got] == ["a", "b", "c", "d"] and got[0][0]["role"] == "system"
    t = tmp_path / "p.txt"
    t.write_text("first prompt\n\nsecond {not json}\n")
    assert [m[0]["content"] for m in read_prompts(t)] == ["first prompt", "second {not json}"]


@needs_backend
def test_a_pickle_with_code_is_refused_by_weights_only_never_run(tmp_path, torch_files):
    """The stats worker loads with torch.load(weights_only=True): a .pt whose pickle would call os.system is
    refused (KT-E583's kind), and the call never happens."""
    from devtools.synthetic import hf_model
    from kt_launch.facts.expert_stats import run_check
    from kt_launch.facts.model import read_model_facts

    hf_model(tmp_path / "model")
    marker, evil = torch_files / "ran", torch_files / "evil.pt"
    found, why = run_check(str(BACKEND), str(evil), read_model_facts(str(tmp_path / "model")), [], mode="reduce",
                           out=str(tmp_path / "out.pt"))
    assert found is not None and not found.ok and found.problem == "not_loadable", why
    assert "weights_only" in found.message and str(evil) in found.message and "posix.system" in found.message
    assert not marker.exists() and not (tmp_path / "out.pt").exists()



@needs_backend
def test_a_large_file_of_zeros_named_pt_is_refused_with_torchs_reason(tmp_path):
    """A sparse 3 GiB file of zeros (a disk image, a truncated download) named .pt: torch's one-sentence reason
    before its weights_only note is kept (it was cut to "no reason given")."""
    from devtools.synthetic import hf_model
    from kt_launch.facts.expert_stats import run_check
    from kt_launch.facts.model import read_model_facts

    hf_model(tmp_path / "model")
    junk = tmp_path / "zeros.pt"
    with open(junk, "wb") as f:
        f.truncate(3 << 30)
    found, why = run_check(str(BACKEND), str(junk), read_model_facts(str(tmp_path / "model")), [])
    assert found is not None and not found.ok and found.problem == "not_loadable", why
    assert str(junk) in found.message and "no reason given" not in found.message and "legacy" in found.message, \
        found.message

@needs_backend
def test_export_pins_the_calibrated_placement_and_mounts_the_stats(calibrated, tmp_path, monkeypatch, capsys):
    """A pod has no calibration cache: export writes the strategy auto resolved to and the stats file's path into
    the pod's profile (not `auto` or a workload name), and mounts its folder like the model's."""
    import shutil

    launch, d, rc = calibrated
    assert rc == 0, launch.err
    paths = synthetic.demo(tmp_path / "demo")  # the same tiny config: the same model fingerprint
    shutil.copytree(d / "cache" / "calibrations", tmp_path / "cache" / "calibrations")
    prof = write_profile(tmp_path, synthetic.amx_profile(tmp_path / "demo", kt={
        "weight_path": str(paths["kt-amxint8"]), "method": "AMXINT8", "threadpool_count": 1, "cpuinfer": 4,
        "num_gpu_experts": 3, "expert_placement": "auto"}))
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["export", "--profile", str(prof), "--host-facts", str(d / "host.json"), "--to", "compose",
               "--set", f"runtime.python={BACKEND}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    stored = next((tmp_path / "cache" / "calibrations").rglob("default.pt"))
    assert "expert_placement: frequency" in out and f"expert_stats: {stored}" in out
    assert f"{stored.parent}:{stored.parent}:ro" in out
