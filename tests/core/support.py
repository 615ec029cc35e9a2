from pathlib import Path

from kt_launch.facts.profile import load_config
from kt_launch.facts.host import host_from_json
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.pipeline import resolve

XEON16 = {
    "cpu": {"model": "Intel Xeon (AMX)", "physical_cores": 16, "logical_cpus": 32,
            "usable_cpus": list(range(32)), "flags": ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512vbmi", "avx512_bf16",
                      "amx_tile", "amx_int8", "amx_bf16"]},
    "numa": [{"id": 0, "cpus": list(range(32)), "memory_bytes": 128 << 30}],
    "memory": {"total_bytes": 128 << 30, "available_bytes": 120 << 30},
    "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 141 << 30}],
}

TWO_SOCKET = {
    "cpu": {"model": "Intel Xeon 2S", "physical_cores": 64, "logical_cpus": 128, "usable_cpus": list(range(128)),
            "flags": ["avx512f", "avx512bw", "avx512_vnni", "avx512vbmi", "avx512_bf16", "amx_tile",
                      "amx_int8", "amx_bf16"]},
    "numa": [{"id": 0, "cpus": list(range(0, 32)) + list(range(64, 96)), "memory_bytes": 1 << 40},
             {"id": 1, "cpus": list(range(32, 64)) + list(range(96, 128)), "memory_bytes": 1 << 40},
             {"id": 2, "cpus": [], "memory_bytes": 1 << 38}],
    "memory": {"total_bytes": 2 << 40, "available_bytes": 2 << 40},
    "gpus": [],
}



def plan_for(profile: Path, host=XEON16, env=None, sets=None, **kw):
    cfg, prov = load_config(profile, env or {}, sets or [])
    inp = ResolveInput(config=cfg, provenance=prov, host=host_from_json(host, "test host"),
                       current_python="/usr/bin/python3", checks=kw.pop("checks", False), **kw)
    return resolve(inp)


def codes(plan):
    return {f.code for f in plan.findings}
