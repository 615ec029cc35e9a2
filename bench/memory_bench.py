"""Benchmark (not a test): the memory plan against a published anchor, and the dry-run time with it on.

1. kvcache-ai/ktransformers doc/en/Kimi-K2-Thinking-Native.md runs Kimi-K2-Thinking (RAWINT4: the native INT4
   compressed-tensors checkpoint for both --model and --kt-weight-path) on 1/2/4/8 x 48 GB GPUs with
   --mem-fraction-static 0.94, --kt-gpu-prefill-token-threshold 400 and the recommended table
   (kt-num-gpu-experts / max-total-tokens / chunked-prefill-size): 1/32768/32768, 8/65536/65536,
   30/80000/65536, 80/100000/65536; it asks for >= 650 GB of RAM. This builds the checkpoint sparse (every tensor
   of the published list: INT4 experts as weight_packed I32 [out, in/8] + weight_scale BF16 [out, in/32] +
   weight_shape, everything else BF16), plans each row through the real pipeline, and prints what the plan says.
2. `kt-launch --dry-run` on a sparse DeepSeek-V3 FP8 checkpoint (163 shards, 92k tensors) with the memory plan on,
   beside `--no-check` (no headers, no plan), timed as whole processes.

    .venv/bin/python bench/memory_bench.py [--runs 7] [--keep DIR]
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
from kt_launch.app import Request, plan_request

GiB, MiB = 1 << 30, 1 << 20
AMX = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
# (GPUs, kt-num-gpu-experts, max-total-tokens, chunked-prefill-size): the doc's "Recommended Parameters"
ANCHOR = [(1, 1, 32768, 32768), (2, 8, 65536, 65536), (4, 30, 80000, 65536), (8, 80, 100000, 65536)]
GPU_48G_MIB = 49140  # nvidia-smi memory.total of a 48 GB RTX 4090 / L20 class card


def host(gpus: int) -> dict:
    """The doc's tested machine: 2 x Xeon Platinum 8488C (2 x 48 cores), 2 TB DDR5, n x 48 GB GPUs."""
    cpus = list(range(192))
    return {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8488C", "physical_cores": 96, "logical_cpus": 192,
                    "usable_cpus": cpus, "flags": AMX},
            "numa": [{"id": 0, "cpus": cpus[:48] + cpus[96:144], "memory_bytes": 1024 * GiB},
                     {"id": 1, "cpus": cpus[48:96] + cpus[144:], "memory_bytes": 1024 * GiB}],
            "memory": {"total_bytes": 2048 * GiB, "available_bytes": 2000 * GiB},
            "gpus": [{"index": i, "name": "NVIDIA GeForce RTX 4090 48GB", "memory_bytes": GPU_48G_MIB * MiB}
                     for i in range(gpus)]}


def anchor(root: Path) -> None:
    t = time.perf_counter()
    model = synthetic.real_model(root / "Kimi-K2-Thinking", "Kimi-K2-Thinking", shards=64)
    print(f"built Kimi-K2-Thinking sparse in {time.perf_counter() - t:.1f} s (64 shards)")
    print("| GPUs | doc: experts/layer, max-total-tokens, chunk | per GPU (GiB): total / reserve / weights+kt buffers "
          "/ GPU experts / KV | free GiB (tightest GPU) | plan says | fit for the same KV | RAM need GiB |")
    print("|---:|---|---|---:|---|---:|---:|")
    for gpus, n, mtt, chunk in ANCHOR:
        hf = root / f"host{gpus}.json"
        hf.write_text(json.dumps(host(gpus)))
        prof = root / f"kimi{gpus}.yaml"
        prof.write_text(json.dumps({
            "model": {"path": str(model)},
            "kt": {"weight_path": str(model), "method": "RAWINT4", "cpuinfer": 96, "threadpool_count": 2,
                   "num_gpu_experts": n, "gpu_prefill_token_threshold": 400, "max_deferred_experts_per_token": 1},
            "server": {"tp_size": gpus, "mem_fraction_static": 0.94, "chunked_prefill_size": chunk,
                       "max_total_tokens": mtt, "port": 30001},
            "runtime": {"flavor": "sglang-kt"}}))
        out = plan_request(Request(profile=str(prof), host_facts=str(hf)))
        m = out.plan.memory
        tight = min(m.gpus, key=lambda g: g.free_bytes)
        mem_codes = sorted({f.code for f in out.findings if f.code[4] == "6" or f.code in ("KT-E230", "KT-W230")})
        says = "fits" if tight.free_bytes >= 0 and not any(c in ("KT-E601", "KT-E603", "KT-W604", "KT-E230")
                                                           for c in mem_codes) else f"does not fit {mem_codes}"
        g = m.gpus[0]
        print(f"| {gpus} | {n}, {mtt}, {chunk} | {g.total_bytes / GiB:.1f} / {g.reserve_bytes / GiB:.1f} / "
              f"{g.weights_bytes / GiB:.1f} / {g.gpu_experts_bytes / GiB:.1f} / "
              f"{g.kv_tokens * g.kv_bytes_per_token / GiB:.1f} | {tight.free_bytes / GiB:.1f} | {says} | "
              f"{m.fit.max_gpu_experts} ({m.fit.limited_by}) | {m.ram.need_bytes / GiB:.0f} "
              f"({m.ram.experts_bytes / GiB:.0f} experts + {m.ram.other_bytes / GiB:.0f} buffers) |")
    w = m.weights
    print(f"checkpoint: routed experts {w.expert_bytes / 1e9:.1f} GB ({w.expert_by_dtype}), non-expert "
          f"{w.nonexpert_bytes / 1e9:.1f} GB; bytes per expert param "
          f"{w.expert_bytes / (60 * 384 * 3 * 7168 * 2048):.4f}")


def dryrun_time(root: Path, runs: int) -> None:
    t = time.perf_counter()
    model = synthetic.real_model(root / "DeepSeek-V3", "DeepSeek-V3", shards=163)
    print(f"built DeepSeek-V3 sparse in {time.perf_counter() - t:.1f} s (163 shards)")
    hf = root / "h200.json"
    hf.write_text(json.dumps({**host(1), "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 143771 * MiB}]}))
    prof = root / "v3.yaml"
    prof.write_text(json.dumps({"model": {"path": str(model)}, "kt": {"method": "FP8"},
                                "server": {"port": 39731}, "runtime": {"flavor": "sglang-kt"}}))
    exe = Path(sys.executable).with_name("kt-launch")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "kt_launch"]),
           "--profile", str(prof), "--host-facts", str(hf), "--dry-run"]
    base = cmd + ["--no-check"]
    times, base_times = [], []
    for i in range(runs + 1):
        for c, acc in ((cmd, times), (base, base_times)):
            t = time.perf_counter()
            r = subprocess.run(c, capture_output=True, text=True)
            if i:
                acc.append(time.perf_counter() - t)
            if r.returncode not in (0, 3):
                print(r.stdout, r.stderr)
                raise SystemExit(1)
    from kt_launch.facts.artifacts import _Cache, model_dir_facts
    from kt_launch.facts.model import read_model_facts
    from kt_launch.facts.weights import weight_bytes

    md, mf = model_dir_facts(str(model), _Cache()), read_model_facts(str(model))
    t = time.perf_counter()
    for _ in range(5):
        weight_bytes(md, mf)
    split = (time.perf_counter() - t) / 5
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}")
    print(f"kt-launch --dry-run (DeepSeek-V3 FP8, 163 shards, memory plan on): median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s over {len(times)} runs")
    print(f"kt-launch --dry-run --no-check (no headers, no plan): median {statistics.median(base_times):.3f} s")
    print(f"of which the memory plan's non-expert header split (in memory, no file read): {split * 1000:.0f} ms")
    print(r.stdout[r.stdout.find("memory ("):].split("\n\n")[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", help="build here and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kt-memory-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        anchor(root)
        print()
        dryrun_time(root, args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
