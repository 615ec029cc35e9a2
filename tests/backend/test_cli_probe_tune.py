"""`kt-launch probe` and `kt-launch tune` end to end with the real kt-kernel in the backend venv,
on the synthetic demo model; a stored tuning shows up in the next plan with source `tuned`.

The methods come from what the loaded kt-kernel variant implements (`kt_kernel` fixture), on any x86-64
CPU: the demo's MoE-LoRA method (AMXBF16_SFT) runs where the variant has it and is refused with KT-E402
where it does not (AVX-512 without BF16, AVX2); BF16 inference runs everywhere.
"""

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
    subprocess.run([sys.executable, str(REPO / "devtools" / "synthetic.py"), str(root / "demo"), "--quiet"], check=True, cwd=REPO)
    prof = root / "demo.yaml"
    prof.write_text((REPO / "configs" / "demo.yaml").read_text().replace("demo/", f"{root}/demo/"))
    return prof


def _kt(args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "kt_launch", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def _profile(demo: Path, method: str) -> Path:
    """The demo profile itself for its MoE-LoRA method; plain sglang-kt inference on the demo model otherwise."""
    if method == "AMXBF16_SFT":
        return demo
    root = demo.parent / "demo"
    weights = root / ("kt-amxint8" if method == "AMXINT8" else "model")
    prof = demo.parent / f"{method.lower()}.yaml"
    prof.write_text(f"model: {{path: {root}/model}}\nkt: {{method: {method}, weight_path: {weights}}}\n"
                    "runtime: {flavor: sglang-kt}\n")
    return prof


@pytest.mark.parametrize("method", ["AMXBF16_SFT", "BF16"])
def test_probe_runs_the_plans_method_or_refuses_it(demo, backend_python, kt_kernel, method):
    r = _kt(["probe", "--profile", str(_profile(demo, method)), "--python", backend_python, "--prefill-qlen", "32",
             "--json"])
    assert "Traceback" not in r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["result"]["method"] == method and doc["result"]["cpu_variant"] == kt_kernel.variant
    codes = [f["code"] for f in doc["findings"]]
    if not kt_kernel.implements(method):
        assert r.returncode == 3 and "KT-E402" in codes and doc["result"]["passed"] is False, r.stdout[-3000:]
        return
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert doc["result"]["passed"] is True and "KT-I401" in codes
    if method == "AMXBF16_SFT":
        assert doc["result"]["output_device"] == "cpu"  # why CUDA graphs are off in MoE-LoRA mode
        assert doc["spec"]["lora_rank"] == 8 and doc["spec"]["lora_alpha"] == 16.0  # from adapter_config.json


def test_probe_refuses_a_plan_without_model_shape(tmp_path, backend_python):
    prof = tmp_path / "p.yaml"
    prof.write_text("model: {path: /nonexistent}\nkt: {method: BF16}\n")
    r = _kt(["probe", "--profile", str(prof), "--python", backend_python])
    assert r.returncode == 3 and "KT-E410" in r.stderr and "Traceback" not in r.stderr


def test_tune_stores_and_the_plan_uses_it(demo, backend_python, kt_kernel, tmp_path):
    # the demo's own method where the variant has it, else BF16 inference (a kernel in every variant)
    prof = str(_profile(demo, kt_kernel.pick(["AMXBF16_SFT", "BF16"])[0]))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "KT_LAUNCH_CACHE_DIR": ""}
    r = _kt(["tune", "--profile", prof, "--python", backend_python, "--threads", "1,2", "--rounds", "1",
             "--prefill-qlen", "32"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[1/2]" in r.stderr and "[2/2]" in r.stderr  # progress per point
    assert (tmp_path / "cache" / "kt-launch" / "tuning.json").exists()
    r = _kt(["--profile", prof, "--dry-run", "--json"], env=env)
    res = json.loads(r.stdout)["resolved"]["kt.cpuinfer"]
    assert res["source"] == "tuned" and res["value"] in (1, 2) and "tuned" in res["reason"]
    r = _kt(["--profile", prof, "--dry-run", "--json", "--set", "kt.cpuinfer=1"], env=env)
    assert json.loads(r.stdout)["resolved"]["kt.cpuinfer"]["source"] == "cli"


def test_tune_of_a_method_the_variant_lacks_stores_nothing(demo, backend_python, kt_kernel, tmp_path):
    missing = [m for m in ("AMXBF16_SFT", "AMXINT8") if not kt_kernel.implements(m)]
    if missing:
        prof = _profile(demo, missing[0])
    else:  # this variant has both: force the avx2 one, which has neither (runtime.env)
        prof = tmp_path / "avx2.yaml"
        prof.write_text(_profile(demo, "AMXINT8").read_text().replace(
            "runtime: {flavor: sglang-kt}", "runtime: {flavor: sglang-kt, env: {KT_KERNEL_CPU_VARIANT: avx2}}"))
    r = _kt(["tune", "--profile", str(prof), "--python", backend_python, "--threads", "1,2", "--rounds", "1",
             "--prefill-qlen", "32"], env={"KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 3 and "method_unavailable" in r.stderr and "Traceback" not in r.stdout + r.stderr
    assert "[2/2]" not in r.stderr and not (tmp_path / "cache" / "tuning.json").exists()


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
