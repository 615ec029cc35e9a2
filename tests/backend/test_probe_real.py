"""The probe against the real kt-kernel 0.7.2 in the backend test venv, on whatever CPU runs the tests.

Which methods run is read from the kt-kernel that loads here (`kt_kernel` fixture: its CPU variant and
the C++ classes that variant has), never assumed: AMX, AVX512-BF16, AVX-512 without BF16 (Ice Lake)
and AVX2-only hosts all run every test. A method the variant implements is run and its numbers
checked against a torch reference; a method it lacks must give KT-E402. Forcing another variant with
an exported KT_KERNEL_CPU_VARIANT (e.g. avx2) is honoured the same way.
"""

from __future__ import annotations

import os

import pytest

from kt_launch.backend.probe import (METHOD_UNAVAILABLE, MISMATCH, TOLERANCE, ProbeSpec, probe_findings, run_probe)
from kt_launch.backend.tune import TunePoint, select_best, tune

TINY = dict(hidden_size=256, moe_intermediate_size=256, num_experts=8, top_k=2, chunked_prefill_size=32,
            decode_repeats=3, prefill_repeats=1, warmup=1)
INFERENCE = ("AMXINT8", "AMXINT4", "BF16")
SFT = ("AMXBF16_SFT", "AMXINT8_SFT", "AMXINT4_SFT")


def spec(method, **kw):
    if method.endswith("_SFT"):
        kw = {"lora_rank": 8, "lora_alpha": 16.0, **kw}
    return ProbeSpec(**{"method": method, "cpuinfer": 1, "threadpool_count": 1, **TINY, **kw})


def codes(r):
    return {f.code for f in probe_findings(r)}


def assert_unavailable(r, method, kt_kernel):
    assert r.error_kind == METHOD_UNAVAILABLE and not r.ok and not r.passed, (r.error_kind, r.error)
    assert r.cpu_variant == kt_kernel.variant
    f = next(f for f in probe_findings(r) if f.code == "KT-E402")
    assert method in f.message and kt_kernel.variant in f.message and f.fix
    assert ("KT_KERNEL_CPU_VARIANT" in f.message) == bool(kt_kernel.forced)


def test_the_plan_check_table_agrees_with_the_loaded_kt_kernel(kt_kernel):
    """The method table (the KT-E240 rule) says the same as the real wheel for the variant that loaded."""
    from kt_launch.resolve.methods import implements

    for method in INFERENCE + SFT:
        assert implements(kt_kernel.variant, method) == kt_kernel.implements(method), (kt_kernel.variant, method)


@pytest.mark.parametrize("method", INFERENCE)
def test_inference_methods_match_reference_or_are_refused(backend_python, kt_kernel, method):
    r = run_probe(spec(method), backend_python, 300)
    if not kt_kernel.implements(method):
        assert_unavailable(r, method, kt_kernel)
        return
    assert r.ok and r.passed, (r.error_kind, r.error, r.stderr_tail[-500:])
    assert r.cpu_variant == kt_kernel.variant and r.kt_kernel_version == "0.7.2"
    assert 0 < r.rel_err <= r.tolerance  # quantization/bf16 rounding: never exactly 0
    assert r.decode_median_s > 0 and r.prefill_qlen == 32 and r.prefill_tokens_per_s > 0
    assert r.weight_source == ("hf_dir" if method == "BF16" else "tensors")
    assert "KT-I401" in codes(r) and not any(f.level == "error" for f in probe_findings(r))


def test_int4_tolerance_is_looser_than_int8_looser_than_bf16(backend_python, kt_kernel):
    have = kt_kernel.pick(("AMXINT4", "AMXINT8", "BF16"))
    if len(have) < 2:
        pytest.skip(f"the {kt_kernel.variant} variant implements only {have}: nothing to order")
    errs = {m: run_probe(spec(m), backend_python, 300) for m in have}
    assert all(r.passed for r in errs.values()), {m: (r.error_kind, r.error) for m, r in errs.items()}
    for lo, hi in zip(have, have[1:]):  # ordered loosest first
        assert errs[lo].rel_err > errs[hi].rel_err and errs[lo].tolerance > errs[hi].tolerance, (lo, hi)


@pytest.mark.parametrize("method", SFT)
def test_sft_with_lora_matches_reference_or_is_refused(backend_python, kt_kernel, method):
    r = run_probe(spec(method), backend_python, 300)
    if not kt_kernel.implements(method):
        assert_unavailable(r, method, kt_kernel)
        return
    assert r.ok and r.passed, (r.error_kind, r.error, r.stderr_tail[-500:])
    assert r.raw["lora_scaling"] == 2.0 and r.output_device == "cpu"
    assert "KT-I402" in codes(r)


def test_reference_check_has_teeth(backend_python, kt_kernel):
    # an impossible tolerance is reported as a warning, not a crash (BF16: every variant has a kernel)
    assert kt_kernel.implements("BF16")
    r2 = run_probe(spec("BF16", tolerance=1e-9), backend_python, 300)
    assert r2.ok and not r2.passed and r2.error_kind == TOLERANCE and "KT-W401" in codes(r2)
    # the reference built with the wrong LoRA scaling must not pass: the LoRA path is really compared
    lora = kt_kernel.pick(SFT)
    if not lora:
        pytest.skip(f"the {kt_kernel.variant} variant has no LoRA (SFT) kernel to check")
    r = run_probe(spec(lora[0], extra=(("reference_lora_scaling", 0.0),)), backend_python, 300)
    assert not r.passed and r.error_kind in (TOLERANCE, MISMATCH), r


def test_method_the_variant_lacks_fails_with_a_clear_finding(backend_python, kt_kernel):
    # AVX2 is on every x86-64 CI machine; its variant has no AMXInt8_MOE
    r = run_probe(spec("AMXINT8", cpu_variant_override="avx2"), backend_python, 300)
    assert r.error_kind == METHOD_UNAVAILABLE and r.cpu_variant == "avx2" and not r.passed
    f = next(f for f in probe_findings(r) if f.code == "KT-E402")
    assert "AMXINT8" in f.message and "avx2" in f.message and "KT_KERNEL_CPU_VARIANT" in f.message and f.fix
    # a method no 0.7.2 variant implements, on the variant that loads here
    assert not kt_kernel.implements("MOE_INT8")
    assert_unavailable(run_probe(spec("MOE_INT8"), backend_python, 300), "MOE_INT8", kt_kernel)


def test_a_variant_forced_from_outside_reaches_the_worker(backend_python, kt_kernel):
    """The environment the probe runs with decides the variant, as it would for the server."""
    r = run_probe(spec("BF16", check=False), backend_python, 300, env={**os.environ, "KT_KERNEL_CPU_VARIANT": "avx2"})
    assert r.ok and r.cpu_variant == "avx2" and r.raw["spec"]["cpu_variant_override"] == "avx2"
    # the spec's own override wins over the inherited one
    r = run_probe(spec("AMXINT8", cpu_variant_override="avx2"), backend_python, 300,
                  env={**os.environ, "KT_KERNEL_CPU_VARIANT": kt_kernel.variant})
    assert r.cpu_variant == "avx2" and r.error_kind == METHOD_UNAVAILABLE


def _runnable(kt_kernel) -> str:
    """A method the loaded variant implements (BF16 has a kernel in every variant)."""
    return kt_kernel.pick(("AMXINT8", "BF16"))[0]


def test_tune_runs_one_process_per_point(backend_python, kt_kernel):
    seen = []
    sweep = tune(spec(_runnable(kt_kernel)), backend_python, [TunePoint(1), TunePoint(2)], timeout_s=300,
                 progress=lambda i, n, pt, r: seen.append((i, n, pt.cpuinfer, r is None)))
    assert seen == [(0, 2, 1, True), (0, 2, 1, False), (1, 2, 2, True), (1, 2, 2, False)]
    assert [p.cpuinfer for p in sweep.points] == [1, 2] and all(p.ok for p in sweep.points)
    assert all(len(p.decode_times_s) == 3 for p in sweep.points)
    assert sweep.cpu_variant == kt_kernel.variant
    c = select_best(sweep)
    assert c is not None and c.cpuinfer in (1, 2) and max(c.decode_ratio, c.prefill_ratio) <= 1.0


def test_tune_of_a_method_the_variant_lacks_stops_after_the_first_point(backend_python, kt_kernel):
    lacking = kt_kernel.lacking()
    sweep = tune(spec(lacking[0]), backend_python, [TunePoint(1), TunePoint(2)], timeout_s=300)
    assert len(sweep.points) == 1 and not sweep.points[0].ok and METHOD_UNAVAILABLE in sweep.points[0].error
    assert select_best(sweep) is None


def test_separate_processes_have_separate_thread_pools(backend_python, kt_kernel):
    method = _runnable(kt_kernel)
    a = run_probe(spec(method, cpuinfer=1, check=False), backend_python, 300)
    b = run_probe(spec(method, cpuinfer=2, check=False), backend_python, 300)
    assert a.ok and b.ok and a.raw["pid"] != b.raw["pid"]
    assert a.raw["spec"]["cpuinfer"] == 1 and b.raw["spec"]["cpuinfer"] == 2
    assert a.rel_err is None and "KT-I403" not in codes(a)  # check=False: nothing claimed


def test_run_tune_sweeps_selects_and_stores(backend_python, kt_kernel, tmp_path):
    from kt_launch.backend.tune import format_progress, run_tune
    from kt_launch.facts.host import CpuFacts, HostFacts, NumaNode
    from kt_launch.facts.tuning import load_tuned

    host = HostFacts(CpuFacts("test cpu", 2, 2, (0, 1), frozenset({"avx2"}), 2), (NumaNode(0, (0, 1)),), 1, 1)
    method = _runnable(kt_kernel)
    lines = []
    out = run_tune(spec(method), backend_python, host, "test-shape", rounds=2, timeout_s=300,
                   progress=lambda *a: lines.append(format_progress(*a)), cache_file=tmp_path / "t.json")
    assert len(out.rounds) == 2 and [p.cpuinfer for p in out.rounds[1].points] == [2, 1]  # 2nd round reversed
    assert out.choice is not None and out.cache_file == tmp_path / "t.json"
    assert [ln for ln in lines if ln][0].startswith("[1/2] 1t/1p: decode ")
    t = load_tuned(host, "test-shape", method, path=tmp_path / "t.json")
    assert t is not None and t.cpuinfer == out.choice.cpuinfer
