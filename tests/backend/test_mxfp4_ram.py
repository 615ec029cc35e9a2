"""The RAM plan's MXFP4 bytes per expert against the real kt-kernel 0.7.2 (issue 24 item 5, DeepSeek-V4-Flash's RAM).

bench/mxfp4_resident_bytes.py loads DeepSeek-V4-Flash-shaped experts (hidden 4096, intermediate 2048, E2M1 + one
scale per 32) into kt-kernel's own MXFP4 class the way NativeMoEWrapper.load_weights does and reports the growth of
the process's anonymous RSS per expert, with glibc returning freed staging at once (MALLOC_MMAP_THRESHOLD_). It runs
for the variant that loads on this CPU and for the avx2 build (KT_KERNEL_CPU_VARIANT=avx2, which every x86-64 CI
host can load), side by side; each must match `cpu_expert_bytes` for that variant: the file's 0.53125 B/param on
AMX / AVX-512, FP32 group scales (0.625) on avx2 (core/methods.py `repacked_on`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from kt_launch.resolve.memory import cpu_expert_bytes
from kt_launch.resolve.methods import ram_from_headers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mxfp4_resident_bytes.py"
EXPERTS = 4


def test_mxfp4_bytes_per_expert_match_the_loaded_kernels(backend_python, kt_kernel):
    runs = {}
    for forced in ("", "avx2"):
        env = {k: v for k, v in os.environ.items() if k != "KT_KERNEL_CPU_VARIANT"}
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        if forced:
            env["KT_KERNEL_CPU_VARIANT"] = forced
        elif kt_kernel.forced:
            env["KT_KERNEL_CPU_VARIANT"] = kt_kernel.variant
        runs[forced] = subprocess.Popen([backend_python, str(BENCH), str(EXPERTS), "1"], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
    seen = set()
    for forced, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        r = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
        assert r["version"] == "0.7.2" and r["experts"] == EXPERTS
        assert r["variant"] == (forced or kt_kernel.variant)
        want, _ = cpu_expert_bytes("MXFP4", 4096, 2048, not ram_from_headers(r["variant"], "MXFP4"))
        got = r["bytes_per_expert"][0]
        assert abs(got - want) <= 0.02 * want, (r, want)
        seen.add(want)
    if kt_kernel.variant != "avx2":  # both layouts seen: 0.53125 and 0.625 B/param
        assert seen == {3 * 2048 * 4096 * 17 // 32, 3 * 2048 * 4096 * 5 // 8}
