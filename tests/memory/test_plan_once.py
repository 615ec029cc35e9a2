"""The memory plan is set up once per resolve (issue 27 item 2): counted the way the architecture review counted, by
the calls of the memory arithmetic's set-up (`setup_from`), the fit and the per-GPU fixed costs during one plan of a
recorded H200 host, and once per TP size for `kt-launch fit`'s rows."""

import json
import sys
from collections import Counter

from kt_launch.app import Request, load_request, plan_fleet, plan_request
from kt_launch.resolve import memory as mem
from kt_launch.resolve.memory_fit import fit_rows

from memory.support import HOSTS

COUNTED = {"setup_from", "compute_fit", "gpu_fixed_costs"}


def counting(fn):
    """Run fn() and count the calls of the memory functions named in COUNTED (by code object, so every import of
    them is counted, however bound)."""
    codes = {getattr(mem, name).__code__: name for name in COUNTED if hasattr(mem, name)}
    seen: Counter = Counter()

    def prof(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen[codes[frame.f_code]] += 1
    sys.setprofile(prof)
    try:
        result = fn()
    finally:
        sys.setprofile(None)
    return result, seen


def test_one_resolve_sets_the_memory_plan_up_once(models, profile, capsys):
    p = profile(models("DeepSeek-V2-Lite"))
    req = Request(profile=str(p), host_facts=str(HOSTS / "h200_1x.json"))
    out, seen = counting(lambda: plan_request(req))
    assert out.plan.memory is not None and out.plan.memory.fit is not None
    print("plan_request", dict(seen))
    assert seen["setup_from"] == 1, seen
    rows, seen = counting(lambda: fit_rows(out.inputs, out.plan.values))
    print("fit_rows", dict(seen))
    assert rows and seen["setup_from"] == len({r["tp_size"] for r in rows}), seen


def test_a_fleet_sets_the_plan_up_once_per_replica(models, profile, tmp_path):
    """Two replicas on a dual-socket H200 host: two resolves, one set-up each (the review counted 12 fits and 40
    per-GPU cost sums)."""
    from fleet.support import dual_socket
    host = tmp_path / "dual.json"
    host.write_text(json.dumps(dual_socket()))
    p = profile(models("DeepSeek-V2-Lite"), fleet={"replicas": 2})
    out, seen = counting(lambda: plan_fleet(Request(profile=str(p), host_facts=str(host))))
    assert len(out.plan.instances) == 2 and all(i.plan.memory.fit is not None for i in out.plan.instances)
    assert seen["setup_from"] == 2, seen
    assert seen["gpu_fixed_costs"] <= 2 * 2, seen  # each replica's GPUs (2 per NUMA node), once


def test_the_fit_status_is_a_field(models, profile, capsys):
    """MoE-LoRA's 0 and "does not fit" are FitStatus values in the plan's JSON, not a sentence or a -1."""
    from kt_launch.core.memory import FitStatus
    p = profile(models("DeepSeek-V2-Lite"))
    h200 = str(HOSTS / "h200_1x.json")
    fits = plan_request(Request(profile=str(p), host_facts=h200)).plan.memory.fit
    assert fits.status is FitStatus.FITS and fits.to_json()["status"] == "fits" and fits.fits
    full = plan_request(Request(profile=str(p), host_facts=h200, sets=("fit.kv_tokens=100000000",))).plan.memory.fit
    assert full.status is FitStatus.NO_ROOM and not full.fits and full.to_json()["max_gpu_experts"] is None
