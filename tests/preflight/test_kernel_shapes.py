"""The kernel-shape gate (resolve/methods.py shape_problems, KT-E140) agrees with the real kt-kernel 0.7.2.

tests/data/kernel_shapes_xeon16_kt072.json is what bench/kernel_shapes_sweep.py recorded on a 16-core AMX Xeon:
kt-kernel's own KTMoEWrapper built, its quantizer loaded and one forward compared with torch, for published models'
sizes and odd ones x AMXINT8/AMXINT4/BF16 x 1-8 thread pools x every CPU variant. Each row: built or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.core.methods import METHODS
from kt_launch.resolve.methods import methods_for_shape, shape_problems

from .support import host, check, finding

GRID = json.loads((Path(__file__).resolve().parents[1] / "data" / "kernel_shapes_xeon16_kt072.json").read_text())
ROWS = [c for c in GRID["cases"] if c["variant"] in METHODS[c["method"]].variants]


def _id(c):
    return f"{c['variant']}-{c['method']}-h{c['hidden_size']}-i{c['moe_intermediate_size']}-p{c['threadpool_count']}"


def test_grid_is_a_real_record():
    assert GRID["kt_kernel_version"] == "0.7.2" and "amx_tile" in GRID["cpu"]["flags"]
    assert len(ROWS) > 500 and {c["variant"] for c in ROWS} >= {"amx", "avx512_bf16", "avx512_base", "avx2"}
    refused = [c for c in ROWS if not c["built"]]
    assert refused and all(c["error"] for c in refused)


def test_gate_refuses_exactly_what_kt_kernel_refused():
    wrong = []
    for c in ROWS:
        got = shape_problems(c["method"], c["variant"], c["hidden_size"], c["moe_intermediate_size"],
                             c["threadpool_count"])
        if bool(got) == c["built"]:
            wrong.append((_id(c), c["built"], [p.text() for p in got], c["error"]))
    assert not wrong, wrong[:10]


def test_methods_unavailable_on_avx2_were_unavailable():
    for c in GRID["cases"]:
        if c["variant"] not in METHODS[c["method"]].variants:
            assert not c["built"] and c["error_kind"] == "method_unavailable", _id(c)


def test_issue_22_measurements():
    """The facts issue 22 measured, as the gate's text says them."""
    (p,) = shape_problems("AMXINT4", "amx", 2880, 2880, 1)[-1:]
    assert p.text().startswith("moe_intermediate_size 2880 must be a multiple of 128 for AMXINT4")
    assert not shape_problems("AMXINT8", "amx", 2880, 2880, 1)
    assert shape_problems("AMXINT4", "amx", 256, 192, 1) and not shape_problems("AMXINT8", "amx", 256, 192, 1)
    for m in ("AMXINT8", "AMXINT4"):
        assert shape_problems(m, "amx", 64, 32, 1) and shape_problems(m, "amx", 256, 96, 1)
    # DeepSeek-V2-Lite (2048, 1408) with AMXINT8 in 4 pools: 352 per pool is not a multiple of 64
    (p,) = shape_problems("AMXINT8", "amx", 2048, 1408, 4)
    assert "multiple of 256" in p.text() and "64 per thread pool x 4 pools" in p.text()
    assert methods_for_shape("amx", 2880, 2880, 1) == ["AMXINT8", "BF16", "FP8"]
    # LLAMAFILE (reference §3.2): % 256 and at most intermediate/256 pools
    assert shape_problems("LLAMAFILE", "avx2", 4096, 384, 1)
    assert "at least 512" in shape_problems("LLAMAFILE", "avx2", 4096, 256, 2)[0].text()
    assert not shape_problems("LLAMAFILE", "avx2", 4096, 512, 2)


@pytest.mark.parametrize("method,h,i,pools", [("AMXINT4", 2880, 2880, 1), ("AMXINT8", 2048, 1408, 4),
                                              ("AMXINT8", 64, 32, 1), ("BF16", 256, 96, 2)])
def test_check_refuses_with_fields(tmp_path, method, h, i, pools):
    """`check` (with an AMX host's facts) says KT-E140 before anything is read, with key and method as fields."""
    shape = synthetic.Shape(hidden=h, moe_inter=i, experts=4, layers=2)
    model = synthetic.hf_model(tmp_path / "m", shape, shards=1, sparse=True)
    prof = {"model": {"path": str(model)}, "runtime": {"flavor": "sglang-kt"},
            "kt": {"method": method, "weight_path": str(model), "threadpool_count": pools, "cpuinfer": 2 * pools,
                   "numa_nodes": list(range(pools))}}
    rc, doc, _ = check(tmp_path, prof, host(numa=pools))
    f = finding(doc, "KT-E140")
    assert rc == 3 and f["level"] == "error" and f["fields"]["method"] == method
    assert f["fields"]["key"] in ("hidden_size", "moe_intermediate_size") and "must be a multiple of" in f["message"]
    cut = shape_problems(method, "amx", h, i, pools)
    assert f"multiple of {cut[0].multiple}" in f["message"]


def test_check_passes_a_shape_kt_kernel_builds(tmp_path):
    shape = synthetic.Shape(hidden=2880, moe_inter=2880, experts=4, layers=2)
    model = synthetic.hf_model(tmp_path / "m", shape, shards=1, sparse=True)
    prof = {"model": {"path": str(model)}, "runtime": {"flavor": "sglang-kt"},
            "kt": {"method": "BF16", "threadpool_count": 1, "cpuinfer": 2}}
    rc, doc, _ = check(tmp_path, prof)
    assert "KT-E140" not in [f["code"] for f in doc["findings"]]
    rc, doc, _ = check(tmp_path, dict(prof, kt={"method": "AMXINT4", "weight_path": str(model),
                                                "threadpool_count": 1, "cpuinfer": 2}))
    assert "use kt.method AMXINT8 or BF16 or FP8" in finding(doc, "KT-E140")["fix"]
