"""Per-host tuning cache: fingerprint, save/load, what the resolver receives."""

from __future__ import annotations

import dataclasses
import json

from kt_launch.backend.tune import (TuneChoice, cache_path, host_fingerprint, load_tuned, load_tuned_entry,
                                    merge_sweeps, save_tuned, select_best, Sweep)
from kt_launch.facts.host import host_from_json
from kt_launch.core.tuning import TunedThreads

SHAPE = "deepseek_v2-h2048-i1408-e64-k6"


def _host(amx_data):
    return host_from_json(amx_data["machine"])


def test_fingerprint_stable_and_cpu_sensitive(amx_data):
    h = _host(amx_data)
    fp = host_fingerprint(h)
    assert fp == host_fingerprint(host_from_json(amx_data["machine"])) and len(fp) == 16
    assert fp == amx_data["machine"]["fingerprint"]  # recorded on the device by the same function
    # memory and GPUs do not change the best thread count; cores and ISA do
    assert host_fingerprint(dataclasses.replace(h, memory_available_bytes=1, gpus=())) == fp
    fewer = dataclasses.replace(h, cpu=dataclasses.replace(h.cpu, usable_cpus=tuple(range(8)), usable_physical_cores=8))
    assert host_fingerprint(fewer) != fp
    no_amx = dataclasses.replace(h, cpu=dataclasses.replace(h.cpu, flags=h.cpu.flags - {"amx_tile"}))
    assert host_fingerprint(no_amx) != fp


def test_cache_path_follows_xdg(tmp_path):
    assert cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "kt-launch" / "tuning.json"
    assert cache_path({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "kt-launch" / "tuning.json"


def test_save_then_load_gives_resolver_tuned_threads(amx_data, tmp_path):
    h = _host(amx_data)
    sw = merge_sweeps([Sweep.from_json(r) for r in amx_data["sweeps"]["AMXINT8"]])
    choice = select_best(sw)
    path = tmp_path / "tuning.json"
    assert save_tuned(h, SHAPE, "AMXINT8", choice, sw, path=path) == path
    t = load_tuned(h, SHAPE, "AMXINT8", path=path)
    assert isinstance(t, TunedThreads)
    assert t.cpuinfer == choice.cpuinfer and t.threadpool_count == 1
    assert t.detail.startswith("tuned ") and f"{choice.cpuinfer} threads" in t.detail and "of best decode" in t.detail
    # other method, other shape, other host: nothing
    assert load_tuned(h, SHAPE, "AMXBF16_SFT", path=path) is None
    assert load_tuned(h, "qwen3_moe-h2048-i768-e128-k8", "AMXINT8", path=path) is None
    other = dataclasses.replace(h, cpu=dataclasses.replace(h.cpu, model="other"))
    assert load_tuned(other, SHAPE, "AMXINT8", path=path) is None
    # a second entry keeps the first
    save_tuned(h, SHAPE, "AMXBF16_SFT", TuneChoice(14, 1, None, 1.0, 1.0, 1.0, 1.0, "r"), path=path)
    assert load_tuned(h, SHAPE, "AMXINT8", path=path).cpuinfer == choice.cpuinfer
    assert load_tuned(h, SHAPE, "AMXBF16_SFT", path=path).cpuinfer == 14
    data = json.loads(path.read_text())
    assert data["version"] == 1 and len(data["entries"]) == 2


def test_bad_cache_files_read_as_empty(amx_data, tmp_path):
    h = _host(amx_data)
    path = tmp_path / "tuning.json"
    for text in ("{not json", "[]", '{"version": 99, "entries": {}}', "\udcff"):
        path.write_text(text, errors="surrogateescape")
        assert load_tuned(h, SHAPE, "AMXINT8", path=path) is None
    # an entry with a bad thread count is ignored, and saving over a bad file works
    key = f"{host_fingerprint(h)}|{SHAPE}|AMXINT8"
    path.write_text(json.dumps({"version": 1, "entries": {key: {"cpuinfer": 0}}}))
    assert load_tuned_entry(h, SHAPE, "AMXINT8", path=path) is None
    path.write_text("garbage")
    save_tuned(h, SHAPE, "AMXINT8", TuneChoice(12, 1, None, 0.99, 1.0, 1.0, 1.0, "r"), path=path)
    assert load_tuned(h, SHAPE, "AMXINT8", path=path).cpuinfer == 12
    assert load_tuned(h, SHAPE, "AMXINT8", path=tmp_path / "missing.json") is None
