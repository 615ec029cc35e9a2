"""The kernel-shape gate against the real kt-kernel 0.7.2 on this CPU (the backend venv, $KT_BACKEND_VENV).

For each method this CPU's kt-kernel variant implements (AMXINT8/AMXINT4 on AVX-512 and AMX, BF16 everywhere),
a few layers are built and run through kt-launch's probe worker, and kt-kernel's answer must be the gate's
(resolve/methods.py shape_problems): built where the gate lets the shape through, refused where it says
"multiple of N". On AVX2 only BF16 runs; the AMX methods are skipped with the reason. The full grid for every
variant was recorded on an AMX Xeon (tests/preflight/test_kernel_shapes.py).
"""

from __future__ import annotations

import pytest

from kt_launch.backend.probe import ProbeSpec, run_probe
from kt_launch.resolve.methods import shape_problems

# (hidden, moe_intermediate, pools): one each side of every rule, small enough to build in seconds.
SHAPES = {
    "AMXINT8": [(128, 256, 1), (64, 32, 1), (256, 96, 1), (256, 128, 2), (256, 192, 2)],
    "AMXINT4": [(128, 256, 1), (128, 192, 1), (64, 128, 1), (256, 256, 2)],
    "BF16": [(128, 256, 1), (256, 96, 1)],  # the 2-pool BF16 misfit on AMX kills the process (SIGSEGV): not run
}


@pytest.mark.parametrize("method", sorted(SHAPES))
def test_gate_matches_kt_kernel_here(method, kt_kernel, backend_python):
    if not kt_kernel.implements(method):
        pytest.skip(f"kt-kernel's {kt_kernel.variant} variant on this CPU does not implement {method}")
    for h, i, pools in SHAPES[method]:
        spec = ProbeSpec(method=method, cpuinfer=pools, threadpool_count=pools, hidden_size=h,
                         moe_intermediate_size=i, num_experts=2, top_k=1, chunked_prefill_size=64, prefill_qlen=0,
                         decode_repeats=1, warmup=0)
        r = run_probe(spec, backend_python, timeout_s=300)
        gate = shape_problems(method, kt_kernel.variant, h, i, pools)
        assert r.ok == (not gate), (method, kt_kernel.variant, h, i, pools, r.error, [p.text() for p in gate])
        if gate:
            assert "multiple of" in gate[0].text() and ("M_STEP" in (r.error or "") or "N_STEP" in (r.error or ""))
