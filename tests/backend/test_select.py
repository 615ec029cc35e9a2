"""Selection, merging and the thread rules, on the sweep recorded on the AMX machine (H200 host,
16-core Xeon with AMX, kt-kernel 0.7.2 'amx' variant; tests/data/amx_sweep_h200_xeon16.json)."""

from __future__ import annotations

import pytest

from kt_launch.backend.tune import (Sweep, SweepPoint, TunePoint, merge_sweeps, ratio_at, ratios, select_best,
                                    sweep_points, thread_grid)
from kt_launch.facts.host import CpuFacts, HostFacts, NumaNode, host_from_json
from kt_launch.resolve.threads import untuned_cpuinfer


def merged(amx_data, key):
    return merge_sweeps([Sweep.from_json(r) for r in amx_data["sweeps"][key]])


def recorded_host(amx_data):
    return host_from_json(amx_data["machine"])


def test_data_file_is_the_amx_machine(amx_data):
    host = recorded_host(amx_data)
    assert {"amx_tile", "amx_int8", "amx_bf16"} <= host.cpu.flags
    assert host.usable_physical_cores == 16 and len(host.cpu_numa_nodes) == 1
    for key, rounds in amx_data["sweeps"].items():
        for r in rounds:
            assert r["cpu_variant"] == "amx", key
            assert r["shape"] == {"hidden_size": 2048, "moe_intermediate_size": 1408, "num_experts": 64, "top_k": 6}
            assert r["prefill_qlen"] == 4096
    assert set(amx_data["sweeps"]) >= {"AMXINT8", "AMXBF16_SFT/forward", "AMXBF16_SFT/serving"}
    # the full 1..16 sweep for both required methods
    for key in ("AMXINT8", "AMXBF16_SFT/forward"):
        for r in amx_data["sweeps"][key]:
            assert sorted(p["cpuinfer"] for p in r["points"]) == list(range(1, 17))


def test_recorded_probes_pass_and_fail_as_required(amx_data):
    got = {}
    for p in amx_data["probes"]:
        key = p["spec"]["method"] + ("/" + p["spec"]["cpu_variant_override"] if p["spec"].get("cpu_variant_override") else "")
        got[key] = p
    for m in ("AMXINT8", "AMXINT4", "AMXBF16_SFT"):
        r = got[m]["result"]
        assert r["passed"] and r["cpu_variant"] == "amx" and r["rel_err"] <= r["tolerance"], m
    assert got["AMXBF16_SFT"]["result"]["output_device"] == "cpu"
    assert got["AMXBF16_SFT"]["spec"]["lora_rank"] == 8
    for m in ("MOE_INT8", "AMXINT8/avx2"):
        codes = [f["code"] for f in got[m]["findings"]]
        assert "KT-E402" in codes and not got[m]["result"]["passed"], m


def test_cliff_at_15_and_16_threads_is_in_the_data(amx_data):
    """Decode collapses (~8 ms per layer) once kt-kernel's workers plus the submitting thread and the
    CUDA host-callback thread exceed the 16 cores."""
    for key in ("AMXINT8", "AMXBF16_SFT/serving"):
        rs = ratios(merged(amx_data, key))
        assert rs[TunePoint(16)][0] < 0.2, key
        assert rs[TunePoint(15)][0] < 0.2, key
        assert rs[TunePoint(14)][0] > 0.9, key


@pytest.mark.parametrize("key", ["AMXINT8", "AMXBF16_SFT/serving", "AMXBF16_SFT/forward"])
def test_tuned_choice_is_within_5_percent_of_best(amx_data, key):
    sw = merged(amx_data, key)
    c = select_best(sw)
    assert c is not None and c.threadpool_count == 1
    assert c.decode_ratio >= 0.95 and c.prefill_ratio >= 0.95
    assert c.cpuinfer != 16  # never the physical-cores rule on this machine
    assert ratio_at(sw, c.cpuinfer) == (c.decode_ratio, c.prefill_ratio)


def test_rules_on_the_recorded_machine(amx_data):
    host = recorded_host(amx_data)
    assert untuned_cpuinfer(host, 1) == 14
    for key in ("AMXINT8", "AMXBF16_SFT/serving"):
        sw = merged(amx_data, key)
        d, p = ratio_at(sw, untuned_cpuinfer(host, 1))
        assert d >= 0.85 and p >= 0.85, key  # the untuned default is good enough on the serving paths
        d16, _ = ratio_at(sw, host.usable_physical_cores)
        assert d16 < 0.2, key  # "all physical cores" is the worst rule here


def _sw(points, method="X"):
    return Sweep(method=method, shape={}, prefill_qlen=64, points=tuple(points))


def _pt(t, d, p, ok=True, tp=1):
    return SweepPoint(t, tp, None, ok, decode_tokens_per_s=d, prefill_tokens_per_s=p)


def test_select_prefers_fewer_threads_within_margin_and_balances_decode_prefill():
    sw = _sw([_pt(4, 99.0, 1000.0), _pt(6, 100.0, 1000.0), _pt(8, 100.0, 700.0)])
    c = select_best(sw)
    assert c.cpuinfer == 4  # 0.99 is within 2% of 1.00
    assert select_best(sw, margin=0.0).cpuinfer == 6
    # decode-only weighting picks the decode winner even if its prefill is poor
    sw2 = _sw([_pt(4, 80.0, 1000.0), _pt(8, 100.0, 600.0)])
    assert select_best(sw2).cpuinfer == 4
    assert select_best(sw2, prefill_weight=0.0).cpuinfer == 8


def test_select_ignores_failed_points_and_handles_empty():
    sw = _sw([_pt(2, None, None, ok=False), _pt(3, 50.0, 500.0)])
    assert select_best(sw).cpuinfer == 3
    assert select_best(_sw([_pt(2, None, None, ok=False)])) is None
    assert select_best(_sw([])) is None


def test_merge_takes_median_across_rounds_and_fails_points_that_failed_once():
    r1 = _sw([_pt(1, 10.0, 100.0), _pt(2, 30.0, 300.0)])
    r2 = _sw([_pt(1, 20.0, 200.0), _pt(2, None, None, ok=False)])
    r3 = _sw([_pt(1, 90.0, 150.0), _pt(2, 31.0, 310.0)])
    m = merge_sweeps([r1, r2, r3])
    p1 = next(p for p in m.points if p.cpuinfer == 1)
    p2 = next(p for p in m.points if p.cpuinfer == 2)
    assert (p1.decode_tokens_per_s, p1.prefill_tokens_per_s) == (20.0, 150.0)
    assert not p2.ok
    with pytest.raises(ValueError):
        merge_sweeps([r1, _sw([], method="Y")])


def test_sweep_json_round_trip(amx_data):
    raw = amx_data["sweeps"]["AMXINT8"][0]
    sw = Sweep.from_json(raw)
    again = Sweep.from_json(sw.to_json())
    assert again == sw and len(sw.points) == 16


def _host(cores, nodes):
    cpus = tuple(range(cores))
    per = cores // nodes
    numa = tuple(NumaNode(i, cpus[i * per:(i + 1) * per]) for i in range(nodes))
    return HostFacts(CpuFacts("x", cores, cores, cpus, frozenset({"avx2"}), cores), numa, 1 << 30, 1 << 30)


def test_sweep_points_grid_and_numa_layouts():
    assert thread_grid(5) == [1, 2, 3, 4, 5]
    g = thread_grid(96)
    assert g[0] == 1 and g[-1] == 96 and set(range(90, 97)) <= set(g) and len(g) < 30
    pts = sweep_points(_host(16, 1))
    assert [p.cpuinfer for p in pts] == list(range(1, 17)) and all(p.threadpool_count == 1 for p in pts)
    pts2 = sweep_points(_host(32, 2))
    pooled = [p for p in pts2 if p.threadpool_count == 2]
    assert pooled and all(p.numa_nodes == (0, 1) and p.cpuinfer % 2 == 0 and p.cpuinfer >= 2 for p in pooled)
