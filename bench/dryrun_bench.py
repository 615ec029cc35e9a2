"""Dry-run latency: `kt-launch --dry-run` (warm caches) side by side with `kt run --dry-run`.

Prints medians of interleaved runs (the machines are noisy: compare within one run).
Usage: .venv/bin/python bench/dryrun_bench.py [--runs 15] [--kt PATH_TO_kt] [--python TARGET_PYTHON]
`--python` is the interpreter with sglang (runtime.python); default: the contract-test sglang-kt venv.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    return time.perf_counter() - t, r.returncode


def _has_kt_cli(python: str) -> bool:
    if not Path(python).exists():
        return False
    r = subprocess.run([python, "-c", "import typer, gguf, kt_kernel.cli"], capture_output=True)
    return r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--kt", default=None, help="the `kt` CLI of kt-kernel 0.7.2 (default: kt_kernel.cli in --python)")
    ap.add_argument("--python", default=str(REPO / ".cache/venvs/sglang-kt/bin/python"))
    args = ap.parse_args()

    kt_launch = str(Path(sys.executable).with_name("kt-launch"))
    env = dict(os.environ)
    cases: dict[str, list[str]] = {}
    base = [kt_launch, "--profile", "configs/deepseek-v2-lite.yaml", "--dry-run", "--no-check"]
    cases["kt-launch --dry-run (flavor sglang-kt, explicit)"] = base + ["--set", "runtime.flavor=sglang-kt"]
    if Path(args.python).exists():
        cases["kt-launch --dry-run (flavor auto, warm cache)"] = base + ["--set", f"runtime.python={args.python}"]
    kt_argv = [args.kt] if args.kt else ([args.python, "-m", "kt_kernel.cli.main"] if _has_kt_cli(args.python) else None)
    if kt_argv:
        Path("/tmp/kt-bench-model").mkdir(exist_ok=True)
        cases["kt run --dry-run (kt-kernel 0.7.2, beside sglang-kt)"] = [
            *kt_argv, "run", "/tmp/kt-bench-model", "--dry-run", "--cpu-threads", "14", "--gpu-experts", "0",
            "--numa-nodes", "1", "--tp", "1", "--max-total-tokens", "4096", "--weights-path", "/tmp/kt-bench-model"]
    else:
        print("note: no `kt` CLI beside sglang-kt; run bench/setup_kt_cli.sh (or pass --kt) to time kt run --dry-run")
    for argv in cases.values():  # warm every cache once (kt run caches its `--help` check)
        timed(argv, env)
        timed(argv, env)
    times: dict[str, list[float]] = {k: [] for k in cases}
    codes: dict[str, set[int]] = {k: set() for k in cases}
    for _ in range(args.runs):
        for name, argv in cases.items():
            dt, rc = timed(argv, env)
            times[name].append(dt)
            codes[name].add(rc)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    ref = statistics.median(times[next(iter(times))])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:55s} median {med * 1000:7.1f} ms  (min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f}, "
              f"exit {sorted(codes[name])})  ratio {med / ref:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
