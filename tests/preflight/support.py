"""Helpers for preflight tests: recorded hosts, profile files, the real CLI in-process and as a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from kt_launch.cli import main

AMX_FLAGS = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]


def host(flags=AMX_FLAGS, numa=1, gpus=1, total_gib=256, avail_gib=200, model="Intel Xeon (Sapphire Rapids)") -> dict:
    cpus = list(range(16 * numa))
    return {
        "cpu": {"model": model, "physical_cores": 16 * numa, "logical_cpus": 16 * numa, "usable_cpus": cpus,
                "flags": list(flags)},
        "numa": [{"id": n, "cpus": cpus[n * 16:(n + 1) * 16], "memory_bytes": 0} for n in range(numa)],
        "memory": {"total_bytes": total_gib << 30, "available_bytes": avail_gib << 30},
        "gpus": [{"index": i, "name": "NVIDIA H200", "memory_bytes": 141 << 30} for i in range(gpus)],
    }


AMX_HOST = host()
AVX2_HOST = host(flags=["avx2", "fma"], model="AMD Ryzen (AVX2 only)")
VNNI_HOST = host(flags=["avx2", "avx512f", "avx512bw", "avx512vnni"], model="Intel Xeon (Cascade Lake)")


def write(tmp: Path, profile: dict, hostfacts: dict = AMX_HOST) -> tuple[Path, Path]:
    p = tmp / "profile.yaml"
    p.write_text(yaml.safe_dump(profile))
    h = tmp / "host.json"
    h.write_text(json.dumps(hostfacts))
    return p, h


def check(tmp: Path, profile: dict, hostfacts: dict | None = AMX_HOST, *extra: str) -> tuple[int, dict, str]:
    """`kt-launch check --json` in-process: (exit code, JSON plan, stderr)."""
    p, h = write(tmp, profile, hostfacts or AMX_HOST)
    args = ["check", "--profile", str(p), "--json", *extra]
    if hostfacts is not None:
        args += ["--host-facts", str(h)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    doc = json.loads(out.getvalue()) if out.getvalue().strip() else {}
    return rc, doc, err.getvalue()


def codes(doc: dict, level: str | None = None) -> list[str]:
    return [f["code"] for f in doc.get("findings", []) if level is None or f["level"] == level]


def finding(doc: dict, code: str) -> dict:
    return next(f for f in doc["findings"] if f["code"] == code)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (no shell)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "kt_launch", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under root with size and mtime (symlinks not followed), to prove nothing was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out
