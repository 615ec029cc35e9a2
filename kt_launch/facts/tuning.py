"""The per-host tuning cache that `kt-launch tune` writes and every plan reads (source `tuned`).

One file, ``<cache dir>/tuning.json`` (`kt_launch.facts.cache.cache_dir`), keyed by host fingerprint,
model shape key and method. Reading it is a fact about this machine, so it lives here; the sweep that
produces an entry lives in `kt_launch.backend.tune`, which stores it with `store_entry`.

The file is user-writable and outlives kt-launch versions, so every entry is validated on read: an
entry with a wrong type (``"cpuinfer": true``, a string, a negative) is ignored with a warning that
names the file and the field, and never reaches a plan as a wrong value.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kt_launch.facts.cache import cache_dir, locked, read_json, write_json
from kt_launch.core.tuning import TunedThreads

CACHE_VERSION = 1
CACHE_FILE = "tuning.json"

_FINGERPRINT_FLAGS = ("amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512bw", "avx512_vnni", "avx512vnni",
                      "avx512_vbmi", "avx512vbmi", "avx512_bf16", "avx2")


def host_fingerprint(host: Any) -> str:
    """Stable id of the CPU side of a host: model, cores, affinity, NUMA layout, ISA flags.

    `host` is `kt_launch.facts.host.HostFacts`. Memory and GPUs are left out on purpose: they do
    not change how many kt-kernel threads are best, and available memory varies from run to run.
    """
    cpu = host.cpu
    flags = sorted(f for f in _FINGERPRINT_FLAGS if f in cpu.flags)
    numa = [[n.id, list(n.cpus)] for n in host.cpu_numa_nodes]
    key = {
        "model": cpu.model, "physical_cores": cpu.physical_cores, "logical_cpus": cpu.logical_cpus,
        "usable_cpus": list(cpu.usable_cpus), "usable_physical_cores": host.usable_physical_cores,
        "numa": numa, "flags": flags,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The tuning file, or None when there is no cache folder to trust (facts/cache.py warned why)."""
    folder = cache_dir(environ)
    return None if folder is None else folder / CACHE_FILE


def cache_key(fingerprint: str, shape_key: str, method: str) -> str:
    return f"{fingerprint}|{shape_key}|{method}"


def read_cache(path: Path) -> dict[str, Any]:
    """The whole cache document; an unreadable, foreign or other-version file reads as empty."""
    return _usable(read_json(path))


def _usable(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {"version": CACHE_VERSION, "entries": {}}
    return data


def other_version(data: Any) -> int | None:
    """The version of a tuning document another kt-launch wrote (None: this version's, absent or unusable)."""
    v = data.get("version") if isinstance(data, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v != CACHE_VERSION else None


def _version_problem(path: Path, v: int) -> str:
    return (f"tuning cache {path} has format version {v}, not {CACHE_VERSION} (another kt-launch wrote it): "
            f"it is neither read nor overwritten; move it away, or set KT_LAUNCH_CACHE_DIR, to tune with this one")


def store_entry(key: str, entry: Mapping[str, Any], path: Path | None = None) -> Path | None:
    """Add or replace one entry, keeping the others; atomic, and locked (fcntl) so that concurrent `tune` runs
    keep each other's entries. None when the cache cannot be written: no cache folder, no lock, or a file of
    another version (left as it is, with a warning)."""
    path = path or cache_path()
    if path is None:
        return None
    with locked(path) as ok:
        if not ok:
            return None
        data = read_json(path)
        v = other_version(data)
        if v is not None:
            _warn(_version_problem(path, v))
            return None
        data = _usable(data)
        data["entries"][key] = dict(entry)
        return path if write_json(path, data) else None


def _warn(text: str) -> None:
    import sys

    try:
        sys.stderr.write(f"kt-launch: warning: {text}\n")
    except (OSError, ValueError):
        pass


# -- validation on read ------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_ratio(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 10)


def entry_problem(e: Any) -> str | None:
    """Why an entry cannot be used (the field and what it holds), or None."""
    if not isinstance(e, dict):
        return f"the entry is {type(e).__name__}, not an object"
    c = e.get("cpuinfer")
    if not _is_int(c) or not 1 <= c <= 1 << 16:
        return f"cpuinfer is {json.dumps(c)[:40]}, not a positive thread count"
    tp = e.get("threadpool_count")
    if tp is not None and (not _is_int(tp) or not 1 <= tp <= c):
        return f"threadpool_count is {json.dumps(tp)[:40]}, not a pool count between 1 and cpuinfer"
    nn = e.get("numa_nodes")
    if nn is not None and (not isinstance(nn, list) or not all(_is_int(n) and 0 <= n < 1 << 16 for n in nn)):
        return f"numa_nodes is {json.dumps(nn)[:40]}, not a list of NUMA node ids"
    for k in ("decode_ratio", "prefill_ratio"):
        if not _is_ratio(e.get(k)):
            return f"{k} is {json.dumps(e.get(k))[:40]}, not a ratio"
    if e.get("measured_at") is not None and not isinstance(e["measured_at"], str):
        return f"measured_at is {json.dumps(e['measured_at'])[:40]}, not a date"
    return None


@dataclass(frozen=True)
class TunedLookup:
    """One lookup: the usable tuning (or None) and, when an entry was there but unusable, why."""

    tuned: TunedThreads | None
    path: Path | None
    problem: str | None = None  # a message for a person: names the file, the field and what to do
    entry: Mapping[str, Any] | None = field(default=None, compare=False)  # the raw entry, when valid


def lookup_tuned(host: Any, shape_key: str, method: str, path: Path | None = None) -> TunedLookup:
    """The cached tuning for this host, model shape and method, validated."""
    path = path or cache_path()
    if path is None:
        return TunedLookup(None, None)
    key = cache_key(host_fingerprint(host), shape_key, method)
    data = read_json(path)
    v = other_version(data)
    if v is not None:
        return TunedLookup(None, path, _version_problem(path, v))
    e = _usable(data)["entries"].get(key)
    if e is None:
        return TunedLookup(None, path)
    problem = entry_problem(e)
    if problem is not None:
        return TunedLookup(None, path, f"tuning cache {path}: the entry for {shape_key} / {method} on this host is "
                           f"ignored: {problem}; run `kt-launch tune` again to replace it")
    return TunedLookup(_tuned_threads(e), path, None, e)


def _tuned_threads(e: Mapping[str, Any]) -> TunedThreads:
    when = str(e.get("measured_at") or "")[:10]
    s = f"tuned {when}: {e['cpuinfer']} threads" if when else f"tuned: {e['cpuinfer']} threads"
    tp = e.get("threadpool_count")
    if tp is not None and tp > 1:
        s += f" in {tp} pools"
    if e.get("decode_ratio") is not None:
        s += f", {e['decode_ratio']:.2f} of best decode"
    if e.get("prefill_ratio") is not None:
        s += f" / {e['prefill_ratio']:.2f} prefill"
    return TunedThreads(cpuinfer=e["cpuinfer"], detail=s, threadpool_count=tp)


def load_tuned_entry(host: Any, shape_key: str, method: str, path: Path | None = None) -> dict[str, Any] | None:
    """The raw entry when it is valid, else None."""
    found = lookup_tuned(host, shape_key, method, path)
    return dict(found.entry) if found.entry is not None else None


def load_tuned(host: Any, shape_key: str, method: str, path: Path | None = None) -> TunedThreads | None:
    """What the resolver uses with source `tuned`, or None (no entry, or an invalid one)."""
    return lookup_tuned(host, shape_key, method, path).tuned
