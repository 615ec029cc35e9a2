"""Which (hidden, moe_intermediate, method, pools, CPU variant) shapes the real kt-kernel builds.

Runs kt-launch's own probe worker (kt_launch/backend/probe_worker.py: kt-kernel's KTMoEWrapper, its
online quantizer ``load_weights_from_tensors`` for AMXINT4/AMXINT8, a tiny HF dir for BF16, one
decode forward compared with a float32 torch reference) once per case, each in its own interpreter
(kt-kernel's CPUInfer is a process-wide singleton, so a pool count needs a fresh process), with
``KT_KERNEL_CPU_VARIANT`` set per case, so an AMX host also answers for its avx512 and avx2 variants.

    python bench/kernel_shapes_sweep.py --out tests/data/kernel_shapes_<host>.json [--jobs 8]

The JSON is what tests/core/test_kernel_shapes.py holds the kernel-shape gate
(kt_launch/resolve/methods.py) to. Standard library only; the target interpreter needs torch and
kt_kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kt_launch", "backend", "probe_worker.py")

# Published models' (hidden, moe_intermediate) pairs (shared/reference/model-shapes.md) and gpt-oss.
PUBLISHED = {
    "DeepSeek-V2-Lite": (2048, 1408),
    "DeepSeek-V2": (5120, 1536),
    "DeepSeek-V3": (7168, 2048),
    "Qwen3-30B-A3B": (2048, 768),
    "Qwen3-235B-A22B": (4096, 1536),
    "Mixtral-8x7B": (4096, 14336),
    "gpt-oss-120b": (2880, 2880),
}
ODD_I = [32, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 704, 768, 1024, 1408, 1536, 2048, 2880]
ODD_H = [32, 64, 96, 128, 192, 256, 320, 2880, 5120]
FIXED = 256  # the other dimension while one varies


def grid():
    cases = []

    def add(variant, method, h, i, pools, tag):
        cases.append({"variant": variant, "method": method, "hidden_size": h, "moe_intermediate_size": i,
                      "threadpool_count": pools, "tag": tag})

    for variant in ("amx", "avx512_bf16"):
        for method in ("AMXINT8", "AMXINT4"):
            for name, (h, i) in PUBLISHED.items():
                for pools in (1, 2, 4, 8):
                    add(variant, method, h, i, pools, name)
            for i in ODD_I:
                for pools in (1, 2, 4, 8):
                    add(variant, method, FIXED, i, pools, "odd_i")
            for h in ODD_H:
                add(variant, method, h, FIXED, 1, "odd_h")
    for variant in ("avx512_vbmi", "avx512_vnni", "avx512_base"):
        for method in ("AMXINT8", "AMXINT4"):
            for i in ODD_I:
                for pools in (1, 2):
                    add(variant, method, FIXED, i, pools, "odd_i")
            for h in ODD_H:
                add(variant, method, h, FIXED, 1, "odd_h")
    for variant in ("amx", "avx512_bf16", "avx2"):
        for i in ODD_I:
            for pools in (1, 2):
                add(variant, "BF16", FIXED, i, pools, "odd_i")
        for h in ODD_H:
            add(variant, "BF16", h, FIXED, 1, "odd_h")
    for method in ("AMXINT8", "AMXINT4"):
        add("avx2", method, FIXED, FIXED, 1, "unavailable")
    return cases


def run_case(python, case, timeout, worker=WORKER):
    spec = {"method": case["method"], "cpuinfer": max(2, case["threadpool_count"]),
            "threadpool_count": case["threadpool_count"], "chunked_prefill_size": 64,
            "num_experts": 2, "top_k": 1, "hidden_size": case["hidden_size"],
            "moe_intermediate_size": case["moe_intermediate_size"], "prefill_qlen": 0,
            "decode_repeats": 1, "warmup": 0, "check": True, "torch_threads": 2}
    env = dict(os.environ, KT_KERNEL_CPU_VARIANT=case["variant"], CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="2")
    t = time.perf_counter()
    try:
        p = subprocess.run([python, worker], input=json.dumps(spec), capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(case, built=False, error="timeout", seconds=round(time.perf_counter() - t, 1)), {}
    res = {}
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        res = {"error": f"no result (rc {p.returncode})"}
    stderr_tail = [ln for ln in p.stderr.splitlines() if ln.strip()][-3:]
    out = dict(case, built=bool(res.get("ok")), passed=bool(res.get("passed")), stage=res.get("stage"),
               error=res.get("error"), error_kind=res.get("error_kind"), rel_err=res.get("rel_err"),
               loaded_variant=res.get("cpu_variant"), int8_kernel=res.get("int8_kernel"),
               rc=p.returncode, seconds=round(time.perf_counter() - t, 1))
    if not out["built"]:
        out["stderr_tail"] = stderr_tail
    return out, res


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--only-variant", default=None)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--worker", default=WORKER)
    a = ap.parse_args()
    cases = grid()
    if a.only_variant:
        cases = [c for c in cases if c["variant"] in a.only_variant.split(",")]
    if a.limit:
        cases = cases[-a.limit:]
    doc = {"format": "kt-launch kernel shapes v1", "cpu": {"model": cpu_model(), "flags": cpu_flags(),
           "logical_cpus": os.cpu_count()}, "kt_kernel_version": None, "torch_version": None,
           "python": a.python, "worker": "kt_launch/backend/probe_worker.py",
           "spec": {"num_experts": 2, "top_k": 1, "chunked_prefill_size": 64, "forward": "decode qlen 1, CPU"},
           "cases": []}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.jobs) as ex:
        for out, res in ex.map(lambda c: run_case(a.python, c, a.timeout, a.worker), cases):
            doc["kt_kernel_version"] = doc["kt_kernel_version"] or res.get("kt_kernel_version")
            doc["torch_version"] = doc["torch_version"] or res.get("torch_version")
            doc["cases"].append(out)
            print(json.dumps({k: out[k] for k in ("variant", "method", "hidden_size", "moe_intermediate_size",
                                                  "threadpool_count", "built", "passed", "error")}), flush=True)
            if len(doc["cases"]) % 25 == 0:
                with open(a.out, "w") as f:
                    json.dump(doc, f, indent=1)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{len(doc['cases'])} cases in {doc['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
