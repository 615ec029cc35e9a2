"""`kt-launch probe` and `kt-launch tune` end to end with the real kt-kernel in the backend venv,
on the synthetic demo model; a stored tuning shows up in the next plan with source `tuned`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "kt_launch.synthetic", str(root / "demo"), "--quiet"], check=True, cwd=REPO)
    prof = root / "demo.yaml"
    prof.write_text((REPO / "configs" / "demo.yaml").read_text().replace("demo/", f"{root}/demo/"))
    return prof


def _kt(args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "kt_launch", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def test_probe_passes_for_the_demo_plan(demo, backend_python):
    r = _kt(["probe", "--profile", str(demo), "--python", backend_python, "--prefill-qlen", "32", "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["result"]["passed"] is True and doc["result"]["method"] == "AMXBF16_SFT"
    assert doc["result"]["output_device"] == "cpu"  # why CUDA graphs are off in MoE-LoRA mode
    assert doc["spec"]["lora_rank"] == 8 and doc["spec"]["lora_alpha"] == 16.0  # from adapter_config.json
    assert "Traceback" not in r.stderr


def test_probe_refuses_a_plan_without_model_shape(tmp_path, backend_python):
    prof = tmp_path / "p.yaml"
    prof.write_text("model: {path: /nonexistent}\nkt: {method: BF16}\n")
    r = _kt(["probe", "--profile", str(prof), "--python", backend_python])
    assert r.returncode == 3 and "KT-E410" in r.stderr and "Traceback" not in r.stderr


def test_tune_stores_and_the_plan_uses_it(demo, backend_python, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = _kt(["tune", "--profile", str(demo), "--python", backend_python, "--threads", "1,2", "--rounds", "1",
             "--prefill-qlen", "32"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[1/2]" in r.stderr and "[2/2]" in r.stderr  # progress per point
    assert (tmp_path / "cache" / "kt-launch" / "tuning.json").exists()
    r = _kt(["--profile", str(demo), "--dry-run", "--json"], env=env)
    res = json.loads(r.stdout)["resolved"]["kt.cpuinfer"]
    assert res["source"] == "tuned" and res["value"] in (1, 2) and "tuned" in res["reason"]
    r = _kt(["--profile", str(demo), "--dry-run", "--json", "--set", "kt.cpuinfer=1"], env=env)
    assert json.loads(r.stdout)["resolved"]["kt.cpuinfer"]["source"] == "cli"


def test_tune_bad_threads_is_exit_2(demo):
    r = _kt(["tune", "--profile", str(demo), "--threads", "a,b"])
    assert r.returncode == 2 and "--threads" in r.stderr


def test_probe_runs_with_the_servers_env_and_fails_clearly_for_a_missing_method(demo, backend_python, tmp_path):
    """runtime.env forces kt-kernel's avx2 variant, which has no AMX INT8 kernel: KT-E402, exit 3."""
    root = demo.parent / "demo"
    prof = tmp_path / "avx2.yaml"
    prof.write_text(f"model: {{path: {root}/model}}\n"
                    f"kt: {{method: AMXINT8, weight_path: {root}/kt-amxint8}}\n"
                    "runtime: {flavor: sglang-kt, env: {KT_KERNEL_CPU_VARIANT: avx2}}\n")
    r = _kt(["probe", "--profile", str(prof), "--python", backend_python, "--prefill-qlen", "32"])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "KT-E402" in r.stdout and "avx2" in r.stdout and "Traceback" not in r.stdout + r.stderr
