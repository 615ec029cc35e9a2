"""The probe against the real kt-kernel 0.7.2 in the backend test venv (CPU-only CI machine).

On a CPU without AMX kt-kernel loads its avx512_bf16 (or avx2) variant; AMXINT8/AMXINT4/BF16 and
the AMX SFT classes are implemented there with AVX-512 kernels, so the numbers are checked for real.
"""

from __future__ import annotations

import subprocess

import pytest

from kt_launch.backend.probe import (METHOD_UNAVAILABLE, MISMATCH, TOLERANCE, ProbeSpec, probe_findings, run_probe)
from kt_launch.backend.tune import TunePoint, select_best, tune

TINY = dict(hidden_size=256, moe_intermediate_size=256, num_experts=8, top_k=2, chunked_prefill_size=32,
            decode_repeats=3, prefill_repeats=1, warmup=1)


def spec(method, **kw):
    return ProbeSpec(**{"method": method, "cpuinfer": 1, "threadpool_count": 1, **TINY, **kw})


def codes(r):
    return {f.code for f in probe_findings(r)}


@pytest.fixture(scope="module")
def variant(backend_python):
    out = subprocess.run([backend_python, "-c", "import kt_kernel; print(kt_kernel.__cpu_variant__)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def has_avx512(variant):
    return variant in ("amx", "avx512_bf16", "avx512_vbmi", "avx512_vnni", "avx512_base")


@pytest.mark.parametrize("method", ["AMXINT8", "AMXINT4", "BF16"])
def test_inference_methods_match_reference(backend_python, variant, method):
    if method.startswith("AMX") and not has_avx512(variant):
        pytest.skip(f"{method} needs an AVX-512 variant, this CPU loads {variant}")
    r = run_probe(spec(method), backend_python, 300)
    assert r.ok and r.passed, (r.error_kind, r.error, r.stderr_tail[-500:])
    assert r.cpu_variant == variant and r.kt_kernel_version == "0.7.2"
    assert 0 < r.rel_err <= r.tolerance  # quantization/bf16 rounding: never exactly 0
    assert r.decode_median_s > 0 and r.prefill_qlen == 32 and r.prefill_tokens_per_s > 0
    assert r.weight_source == ("hf_dir" if method == "BF16" else "tensors")
    assert "KT-I401" in codes(r) and not any(f.level == "error" for f in probe_findings(r))


def test_int4_tolerance_is_looser_than_int8_looser_than_bf16(backend_python, variant):
    if not has_avx512(variant):
        pytest.skip("AMX methods need AVX-512")
    errs = {m: run_probe(spec(m), backend_python, 300) for m in ("AMXINT4", "AMXINT8", "BF16")}
    assert errs["AMXINT4"].rel_err > errs["AMXINT8"].rel_err > errs["BF16"].rel_err
    assert errs["AMXINT4"].tolerance > errs["AMXINT8"].tolerance > errs["BF16"].tolerance


@pytest.mark.parametrize("method", ["AMXBF16_SFT", "AMXINT8_SFT", "AMXINT4_SFT"])
def test_sft_with_lora_matches_reference_and_returns_cpu_tensor(backend_python, variant, method):
    if variant not in ("amx", "avx512_bf16"):
        pytest.skip(f"AMX SFT classes exist only in the amx and avx512_bf16 variants (this CPU: {variant})")
    r = run_probe(spec(method, lora_rank=8, lora_alpha=16.0), backend_python, 300)
    assert r.ok and r.passed, (r.error_kind, r.error, r.stderr_tail[-500:])
    assert r.raw["lora_scaling"] == 2.0 and r.output_device == "cpu"
    assert "KT-I402" in codes(r)


def test_reference_check_has_teeth(backend_python, variant):
    if variant not in ("amx", "avx512_bf16"):
        pytest.skip("needs the SFT classes")
    # the reference built with the wrong LoRA scaling must not pass: the LoRA path is really compared
    bad = spec("AMXBF16_SFT", lora_rank=8, lora_alpha=16.0, extra=(("reference_lora_scaling", 0.0),))
    r = run_probe(bad, backend_python, 300)
    assert not r.passed and r.error_kind in (TOLERANCE, MISMATCH), r
    # an impossible tolerance is reported as a warning, not a crash
    r2 = run_probe(spec("BF16", tolerance=1e-9), backend_python, 300)
    assert r2.ok and not r2.passed and r2.error_kind == TOLERANCE and "KT-W401" in codes(r2)


def test_method_the_variant_lacks_fails_with_a_clear_finding(backend_python):
    # AVX2 is on every x86-64 CI machine; its variant has no AMXInt8_MOE
    r = run_probe(spec("AMXINT8", cpu_variant_override="avx2"), backend_python, 300)
    assert r.error_kind == METHOD_UNAVAILABLE and r.cpu_variant == "avx2" and not r.passed
    f = next(f for f in probe_findings(r) if f.code == "KT-E402")
    assert "AMXINT8" in f.message and "avx2" in f.message and "KT_KERNEL_CPU_VARIANT" in f.message and f.fix
    # a method no 0.7.2 variant implements, on the variant that loads by itself
    r2 = run_probe(spec("MOE_INT8"), backend_python, 300)
    assert r2.error_kind == METHOD_UNAVAILABLE and "KT-E402" in codes(r2)


def test_tune_runs_one_process_per_point(backend_python, variant):
    method = "AMXINT8" if has_avx512(variant) else "BF16"
    seen = []
    sweep = tune(spec(method), backend_python, [TunePoint(1), TunePoint(2)], timeout_s=300,
                 progress=lambda i, n, pt, r: seen.append((i, n, pt.cpuinfer, r is None)))
    assert seen == [(0, 2, 1, True), (0, 2, 1, False), (1, 2, 2, True), (1, 2, 2, False)]
    assert [p.cpuinfer for p in sweep.points] == [1, 2] and all(p.ok for p in sweep.points)
    assert all(len(p.decode_times_s) == 3 for p in sweep.points)
    assert sweep.cpu_variant == variant
    c = select_best(sweep)
    assert c is not None and c.cpuinfer in (1, 2) and max(c.decode_ratio, c.prefill_ratio) <= 1.0


def test_separate_processes_have_separate_thread_pools(backend_python, variant):
    method = "AMXINT8" if has_avx512(variant) else "BF16"
    a = run_probe(spec(method, cpuinfer=1, check=False), backend_python, 300)
    b = run_probe(spec(method, cpuinfer=2, check=False), backend_python, 300)
    assert a.ok and b.ok and a.raw["pid"] != b.raw["pid"]
    assert a.raw["spec"]["cpuinfer"] == 1 and b.raw["spec"]["cpuinfer"] == 2
    assert a.rel_err is None and "KT-I403" not in codes(a)  # check=False: nothing claimed


def test_run_tune_sweeps_selects_and_stores(backend_python, variant, tmp_path):
    from kt_launch.backend.tune import format_progress, load_tuned, run_tune
    from kt_launch.facts.host import CpuFacts, HostFacts, NumaNode

    host = HostFacts(CpuFacts("test cpu", 2, 2, (0, 1), frozenset({"avx2"}), 2), (NumaNode(0, (0, 1)),), 1, 1)
    method = "AMXINT8" if has_avx512(variant) else "BF16"
    lines = []
    out = run_tune(spec(method), backend_python, host, "test-shape", rounds=2, timeout_s=300,
                   progress=lambda *a: lines.append(format_progress(*a)), cache_file=tmp_path / "t.json")
    assert len(out.rounds) == 2 and [p.cpuinfer for p in out.rounds[1].points] == [2, 1]  # 2nd round reversed
    assert out.choice is not None and out.cache_file == tmp_path / "t.json"
    assert [ln for ln in lines if ln][0].startswith("[1/2] 1t/1p: decode ")
    t = load_tuned(host, "test-shape", method, path=tmp_path / "t.json")
    assert t is not None and t.cpuinfer == out.choice.cpuinfer
