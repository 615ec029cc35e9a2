"""Benchmark (not a test): `kt-launch check` on a DeepSeek-V3-shaped checkpoint, read from headers only.

Builds in a temp dir (sparse files: real header sizes and tensor names/shapes, data as holes):
- an HF dir with 163 safetensors shards + model.safetensors.index.json (FP8 experts with weight_scale_inv),
- a matching AMXINT4 kt-kernel weight dir (blk.L.ffn_*_exps.E.numa.N.{weight,scale}, 2 NUMA partitions),
then times the real CLI in a subprocess several times and prints the median. Target: < 1 s on 2 cores.

    .venv/bin/python bench/preflight_bench.py [--runs 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: devtools/ is not installed
from devtools import synthetic  # noqa: E402

HOST = {
    "cpu": {"model": "Intel Xeon (Sapphire Rapids, recorded)", "physical_cores": 64, "logical_cpus": 128,
            "usable_cpus": list(range(128)), "flags": ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi",
                                                       "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]},
    "numa": [{"id": 0, "cpus": list(range(0, 32)) + list(range(64, 96)), "memory_bytes": 512 << 30},
             {"id": 1, "cpus": list(range(32, 64)) + list(range(96, 128)), "memory_bytes": 512 << 30}],
    "memory": {"total_bytes": 1024 << 30, "available_bytes": 1000 << 30},
    "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 141 << 30}],
}


def build(root: Path) -> Path:
    t0 = time.perf_counter()
    shape = synthetic.DEEPSEEK_V3
    synthetic.hf_model(root / "DeepSeek-V3", shape, expert_dtype="F8_E4M3", shards=163, sparse=True)
    synthetic.amx_weights(root / "DeepSeek-V3-AMXINT4", shape, bits=4, numa=2, sparse=True)
    (root / "host.json").write_text(json.dumps(HOST))
    profile = root / "v3.yaml"
    profile.write_text(json.dumps({
        "model": {"path": str(root / "DeepSeek-V3")},
        "kt": {"weight_path": str(root / "DeepSeek-V3-AMXINT4"), "method": "AMXINT4", "threadpool_count": 2},
        "server": {"port": 39731}, "runtime": {"flavor": "sglang-kt"},
    }))
    hdr = sum(int.from_bytes(open(p, "rb").read(8), "little") for p in (root / "DeepSeek-V3").glob("*.safetensors"))
    amx = sum(int.from_bytes(open(p, "rb").read(8), "little") for p in (root / "DeepSeek-V3-AMXINT4").glob("*.safetensors"))
    print(f"built in {time.perf_counter() - t0:.1f} s: 163 HF shards ({hdr / 1e6:.1f} MB of headers), "
          f"AMXINT4 dir ({amx / 1e6:.1f} MB of headers)")
    return profile


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", help="build here and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kt-preflight-bench-"))
    try:
        profile = build(root)
        exe = Path(sys.executable).with_name("kt-launch")
        cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "kt_launch"]),
               "check", "--profile", str(profile), "--host-facts", str(root / "host.json")]
        base = cmd[:-4] + ["--no-check"] + cmd[-4:]
        times, base_times = [], []
        for i in range(args.runs + 1):
            for c, acc in ((cmd, times), (base, base_times)):
                t = time.perf_counter()
                r = subprocess.run(c, capture_output=True, text=True)
                dt = time.perf_counter() - t
                if i:  # the first round warms the page cache
                    acc.append(dt)
                if r.returncode not in (0, 3):
                    print(r.stdout, r.stderr)
                    return 1
        last = subprocess.run(cmd, capture_output=True, text=True)
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu}, "
              f"Python {platform.python_version()}")
        print(f"kt-launch check (163 shards + AMXINT4 dir): median {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s over {len(times)} runs (exit {last.returncode})")
        print(f"kt-launch check --no-check (startup + resolve only): median {statistics.median(base_times):.3f} s")
        print(f"preflight share: {statistics.median(times) - statistics.median(base_times):.3f} s")
        print(last.stdout.strip())
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
