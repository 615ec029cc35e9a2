"""Helpers for the fleet tests: a dual-socket host's facts, fleet profiles, the real router's venv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GiB = 1 << 30
AMX = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]


def dual_socket(cores_per_node: int = 32, gpus_per_node: int = 2, node_ram: int = 512 * GiB,
                gpu_nodes: tuple[int, ...] | None = None, numa_known: bool = True) -> dict:
    """A two-socket host as `kt-launch doctor --json` records it: SMT 2, node i = CPUs [i*2c, (i+1)*2c),
    GPUs attached to both nodes (gpu_nodes: the node of each GPU)."""
    logical = 2 * cores_per_node
    nodes = [{"id": i, "cpus": list(range(i * logical, (i + 1) * logical)), "memory_bytes": node_ram} for i in (0, 1)]
    gpu_nodes = gpu_nodes if gpu_nodes is not None else tuple(i // gpus_per_node for i in range(2 * gpus_per_node))
    gpus = []
    for i, node in enumerate(gpu_nodes):
        g = {"index": i, "name": "NVIDIA H200", "memory_bytes": 141 * GiB, "uuid": f"GPU-{i:08x}-test"}
        if numa_known:
            g["numa_node"] = node
        gpus.append(g)
    return {
        "cpu": {"model": "Test Xeon", "physical_cores": 2 * cores_per_node, "logical_cpus": 2 * logical,
                "usable_cpus": list(range(2 * logical)), "flags": AMX},
        "numa": nodes,
        "memory": {"total_bytes": 2 * node_ram, "available_bytes": 2 * node_ram * 15 // 16},
        "gpus": gpus,
    }


def write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def write_profile(dir: Path, doc: dict, name: str = "profile.yaml") -> Path:
    p = dir / name
    p.write_text(yaml.safe_dump(doc))
    return p


def fleet_profile(python: str | Path, port: int, fleet: dict | None = None, **extra) -> dict:
    doc = {
        "model": {"path": "/nonexistent/DeepSeek-V2-Lite-Chat", "served_name": "dsv2-lite"},
        "kt": {"weight_path": "/nonexistent/kt-bf16", "method": "BF16"},
        "server": {"host": "127.0.0.1", "port": port},
        "runtime": {"python": str(python), "flavor": "sglang-kt"},
        "fleet": fleet if fleet is not None else {},
    }
    for section, values in extra.items():
        doc.setdefault(section, {}).update(values)
    return doc


def kt_launch(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = REPO / ".venv/bin/kt-launch"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def router_python() -> Path:
    """The interpreter of the real sglang-router venv (tests/fleet/setup_router_venv.sh builds it)."""
    base = Path(os.environ.get("KT_LAUNCH_ROUTER_VENV", REPO / ".cache/router-venv"))
    return base / "bin/python"
