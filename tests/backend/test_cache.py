"""Per-host tuning cache: fingerprint, save (backend.tune) and load (facts.tuning), what the resolver
receives, and entries of the wrong shape never reaching a plan."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kt_launch.backend.tune import TuneChoice, merge_sweeps, save_tuned, select_best, Sweep
from kt_launch.facts.host import host_from_json
from kt_launch.facts.tuning import (cache_key, cache_path, host_fingerprint, load_tuned, load_tuned_entry,
                                    lookup_tuned)
from kt_launch.core.tuning import TunedThreads

REPO = Path(__file__).resolve().parents[2]

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


def test_cache_path_is_the_one_cache_dir(tmp_path):
    """KT_LAUNCH_CACHE_DIR, then $XDG_CACHE_HOME/kt-launch, then ~/.cache/kt-launch (facts.cache.cache_dir)."""
    both = {"KT_LAUNCH_CACHE_DIR": str(tmp_path / "kt"), "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    assert cache_path(both) == tmp_path / "kt" / "tuning.json"
    assert cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "kt-launch" / "tuning.json"
    assert cache_path({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "kt-launch" / "tuning.json"


def test_app_reads_the_tuning_cache_through_facts_only():
    """Gathering facts must not import the backend (sweeps, probes): reading the cache is a fact."""
    code = ("import sys, kt_launch.app, kt_launch.facts.tuning; "
            "bad=[m for m in sys.modules if m.startswith('kt_launch.backend')]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


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


@pytest.mark.parametrize("field,value", [
    ("cpuinfer", True), ("cpuinfer", "14"), ("cpuinfer", -3), ("cpuinfer", 14.0), ("cpuinfer", None),
    ("cpuinfer", [14]), ("threadpool_count", "2"), ("threadpool_count", 0), ("threadpool_count", False),
    ("threadpool_count", 99), ("numa_nodes", "0"), ("numa_nodes", [-1]), ("numa_nodes", [True]),
    ("decode_ratio", "0.9"), ("decode_ratio", 11.0), ("prefill_ratio", True), ("measured_at", 20261128),
])
def test_entries_of_the_wrong_type_are_ignored_with_a_warning(amx_data, tmp_path, field, value):
    h = _host(amx_data)
    path = tmp_path / "tuning.json"
    save_tuned(h, SHAPE, "AMXINT8", TuneChoice(12, 1, None, 0.99, 1.0, 1.0, 1.0, "r"), path=path)
    data = json.loads(path.read_text())
    key = cache_key(host_fingerprint(h), SHAPE, "AMXINT8")
    data["entries"][key][field] = value
    path.write_text(json.dumps(data))
    found = lookup_tuned(h, SHAPE, "AMXINT8", path=path)
    assert found.tuned is None and load_tuned(h, SHAPE, "AMXINT8", path=path) is None
    assert found.problem and field in found.problem and str(path) in found.problem and "kt-launch tune" in found.problem
    assert load_tuned_entry(h, SHAPE, "AMXINT8", path=path) is None


def test_a_bad_entry_reaches_the_plan_as_a_warning_not_a_value(tmp_path):
    """End to end: a hand-edited `"cpuinfer": true` is ignored (the rule's value is used) with a warning."""
    from kt_launch.facts.host import gather_host
    from kt_launch.facts.model import read_model_facts
    from devtools.synthetic import amx_profile, demo

    root = tmp_path / "demo"
    demo(root)
    prof = tmp_path / "p.json"
    p = amx_profile(root)
    p["kt"].pop("cpuinfer")
    prof.write_text(json.dumps(p))
    cache = tmp_path / "cache"
    env = {**os.environ, "KT_LAUNCH_CACHE_DIR": str(cache)}
    host = gather_host(env)
    shape = read_model_facts(str(root / "model")).shape_key
    save_tuned(host, shape, "AMXINT8", TuneChoice(1, 1, None, 1.0, 1.0, 1.0, 1.0, "r"), path=cache / "tuning.json")

    def plan():
        r = subprocess.run([sys.executable, "-m", "kt_launch", "--profile", str(prof), "--dry-run", "--json"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        return r, json.loads(r.stdout)["resolved"]["kt.cpuinfer"]

    r, res = plan()
    assert res["source"] == "tuned" and res["value"] == 1, r.stderr
    data = json.loads((cache / "tuning.json").read_text())
    (entry,) = data["entries"].values()
    entry["cpuinfer"] = True
    (cache / "tuning.json").write_text(json.dumps(data))
    r, res = plan()
    assert res["source"] != "tuned" and res["value"] is not True
    assert "tuning cache" in r.stderr and "cpuinfer is true" in r.stderr and "Traceback" not in r.stderr


def test_unwritable_cache_is_not_stored_and_not_a_crash(amx_data, tmp_path):
    h = _host(amx_data)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert save_tuned(h, SHAPE, "AMXINT8", TuneChoice(12, 1, None, 0.99, 1.0, 1.0, 1.0, "r"),
                      path=blocker / "sub" / "tuning.json") is None


# -- caches you can trust (issue 18) --------------------------------------------------------------

from kt_launch.facts.tuning import CACHE_VERSION, store_entry  # noqa: E402

ENTRY = {"cpuinfer": 8, "threadpool_count": 1}


def test_a_planted_symlink_at_tuning_json_is_replaced_not_followed(tmp_path, capfd):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = tmp_path / "tuning.json"
    path.symlink_to(victim)
    assert store_entry("k", ENTRY, path) == path
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and json.loads(path.read_text())["entries"] == {"k": ENTRY}


def test_two_concurrent_writers_keep_every_entry(tmp_path):
    """fcntl.flock around the read-modify-write: 2 processes x 100 entries = 200 (without it, about 114)."""
    path = tmp_path / "tuning.json"
    code = ("import sys\nfrom pathlib import Path\nfrom kt_launch.facts.tuning import store_entry\n"
            "for i in range(100):\n"
            "    assert store_entry(f'{sys.argv[1]}-{i}', {'cpuinfer': 8}, Path(sys.argv[2])) is not None\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, name, str(path)]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(json.loads(path.read_text())["entries"]) == 200


def test_another_versions_file_is_neither_read_nor_overwritten(amx_data, tmp_path, capfd):
    h = _host(amx_data)
    path = tmp_path / "tuning.json"
    key = cache_key(host_fingerprint(h), SHAPE, "AMXINT8")
    text = json.dumps({"version": CACHE_VERSION + 1, "entries": {key: ENTRY}})
    path.write_text(text)
    assert store_entry("k", ENTRY, path) is None
    assert path.read_text() == text
    assert f"format version {CACHE_VERSION + 1}" in capfd.readouterr().err
    found = lookup_tuned(h, SHAPE, "AMXINT8", path)
    assert found.tuned is None and "neither read nor overwritten" in found.problem and str(path) in found.problem


def test_an_untrusted_cache_dir_is_skipped_with_a_warning(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    code = ("from kt_launch.facts.tuning import cache_path, store_entry\n"
            "print(cache_path(), store_entry('k', {'cpuinfer': 8}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KT_LAUNCH_CACHE_DIR": str(shared)})
    assert r.returncode == 0 and r.stdout.split() == ["None", "None"], r.stdout + r.stderr
    assert "writable by every user" in r.stderr and not (shared / "tuning.json").exists()


def _no_home_run(code: str, home: str | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME", "KT_LAUNCH_CACHE_DIR")}
    if home is not None:
        env["HOME"] = home
    env["PYTHONPATH"] = str(REPO)
    # a user namespace in which this process is user 54321, which has no passwd entry
    return subprocess.run(["unshare", "--user", "--map-user=54321", "--map-group=54321", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


@pytest.mark.parametrize("home", [None, ""])
def test_no_home_and_no_passwd_entry_means_no_cache_not_a_relative_one(tmp_path, home):
    code = "import os, pwd\ntry: pwd.getpwuid(os.getuid())\nexcept KeyError: print('none')"
    probe = _no_home_run(code, None, tmp_path)
    if probe.stdout.strip() != "none":
        pytest.skip(f"no user namespace for a user without a passwd entry here: {probe.stderr[-200:]}")
    code = ("from kt_launch.facts.tuning import cache_path, store_entry\n"
            "print(cache_path(), store_entry('k', {'cpuinfer': 8}))\n")
    r = _no_home_run(code, home, tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["None", "None"], r.stdout + r.stderr
    assert "HOME is unset or empty and this user has no passwd entry" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing in the working directory: no ./~/.cache, no .cache


def test_a_home_too_long_for_a_path_means_no_cache(tmp_path):
    home = "/" + "/".join(["x" * 200] * 30)
    assert cache_path({"HOME": home}) is None
    assert cache_path({"KT_LAUNCH_CACHE_DIR": "/tmp/" + "y" * 300}) is None
