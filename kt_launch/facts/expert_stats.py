"""Expert-activation stats: the calibration cache, and the check of a stats file in runtime.python.

The calibration cache (``<cache dir>/calibrations/<model fingerprint>/<workload>.pt`` plus ``<workload>.json``,
written by `kt-launch calibrate`) holds one reduced recorder dump per model and workload. A model is identified by
its config.json (its parsed content, hashed) with its MoE shape in front: two checkpoints with the same config.json
(a fine-tune of a base, say) share a fingerprint, so name the workload to tell them apart (`--name`).

A stats file is never opened here beyond a stat: expert_stats_worker.py loads it in runtime.python with
``torch.load(weights_only=True)``. Its answer is cached under ``<cache dir>/expert-stats/`` keyed by the file's
identity (realpath, size, mtime, inode), the interpreter, the worker's source and the request (model shape,
budgets): a warm `check` or `--dry-run` starts no interpreter; `--dry-run` never starts one (it says the file was
not checked).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from kt_launch.core.model import ModelFacts
from kt_launch.core.placement import StatsCheck, StatsFacts, is_workload_name
from kt_launch.facts import worker as _worker
from kt_launch.facts.cache import cache_dir as _cache_dir
from kt_launch.facts.cache import file_stamp, read_json, source_sha, write_atomic, write_json

WORKER = Path(__file__).with_name("expert_stats_worker.py")
CACHE_SCHEMA = 1
TIMEOUT_S = 300.0
WORKLOAD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def workload_problem(name: str) -> str | None:
    if WORKLOAD.fullmatch(name) is None:
        return (f"workload name {name[:80]!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                "digit")
    return None


def model_fingerprint(model_path: str, model: ModelFacts) -> str:
    """The calibration key of a model dir: its MoE shape, readable, and a hash of its parsed config.json."""
    from kt_launch.facts.reader import MODEL_CONFIG, ReadError, read_json as read_cfg

    try:
        cfg = read_cfg(Path(model_path) / "config.json", MODEL_CONFIG)
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    except ReadError:
        digest = "noconfig"
    kind = re.sub(r"[^A-Za-z0-9_.-]", "_", model.model_type or "model")[:40]
    return f"{kind}-L{model.num_layers}-e{model.num_experts}-{digest}"


def calibrations_root(environ: Mapping[str, str] | None = None) -> Path | None:
    base = _cache_dir(environ)
    return None if base is None else base / "calibrations"


def list_calibrations(fingerprint: str, environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The workloads calibrated for this model: [{workload, path, meta...}], by name. Entries whose .pt is missing
    are left out."""
    root = calibrations_root(environ)
    if root is None:
        return []
    folder = root / fingerprint
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for n in names:
        if not n.endswith(".json") or workload_problem(n[:-5]) is not None:
            continue
        pt = folder / f"{n[:-5]}.pt"
        try:
            if not stat.S_ISREG(os.lstat(pt).st_mode):
                continue
        except OSError:
            continue
        meta = read_json(folder / n)
        out.append({"workload": n[:-5], "path": str(pt), **(meta if isinstance(meta, dict) else {})})
    return out


def calibration_path(fingerprint: str, workload: str, environ: Mapping[str, str] | None = None) -> Path | None:
    root = calibrations_root(environ)
    return None if root is None else root / fingerprint / f"{workload}.pt"


def store_calibration(fingerprint: str, workload: str, reduced: Path, meta: Mapping[str, Any],
                      environ: Mapping[str, str] | None = None) -> Path:
    """Move the worker's reduced file into the cache (atomic rename in the same folder) and write its meta.
    Raises OSError."""
    target = calibration_path(fingerprint, workload, environ)
    if target is None:
        raise OSError("no cache folder to store the calibration in (set KT_LAUNCH_CACHE_DIR)")
    os.replace(reduced, target)
    write_atomic(target.with_suffix(".json"), json.dumps({**meta, "written_at": time.time()}, allow_nan=False),
                 make_dirs=True, follow_symlinks=False)
    return target


def cache_problem(fingerprint: str, workload: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why a calibration could not be stored (checked before the server starts, not after its workload ran): no
    cache folder, or one that cannot be made or written; None when it can."""
    target = calibration_path(fingerprint, workload, environ)
    if target is None:
        return "no cache folder to store the calibration in (set KT_LAUNCH_CACHE_DIR)"
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        return f"the calibration cache {target.parent} cannot be made ({e.strerror or e}); set KT_LAUNCH_CACHE_DIR"
    if not os.access(target.parent, os.W_OK | os.X_OK):
        return f"the calibration cache {target.parent} is not writable; set KT_LAUNCH_CACHE_DIR"
    return None


def staging_path(fingerprint: str, workload: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """A fresh temp name next to where the calibration goes (so the final rename is atomic); the folder is made."""
    target = calibration_path(fingerprint, workload, environ)
    if target is None:
        return None
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return target.parent / f".{workload}.{os.getpid()}.{os.urandom(4).hex()}.tmp.pt"


# -- the check in runtime.python ----------------------------------------------------------------------------------

def _request(path: str, model: ModelFacts, budgets: list[int]) -> dict[str, Any]:
    return {"path": path, "num_layers": model.num_layers, "num_experts": model.num_experts,
            "moe_layers": list(model.moe_layers), "budgets": sorted(set(budgets))}


def _entry_path(root: Path, python_abs: str, real: str, req: Mapping[str, Any]) -> Path:
    key = json.dumps([CACHE_SCHEMA, python_abs, real, {k: v for k, v in req.items() if k != "path"}],
                     sort_keys=True)
    return root / f"stats-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _stamp(real: str, python_abs: str) -> dict[str, Any]:
    return {"file": file_stamp(real), "python": file_stamp(os.path.realpath(python_abs)),
            "worker": source_sha(WORKER)}


def _root() -> Path | None:
    base = _cache_dir()
    return None if base is None else base / "expert-stats"


def _python_abs(python: str) -> str | None:
    from kt_launch.facts.sglang import _resolve_python as resolve  # one rule for "which file is this interpreter"

    return resolve(python)


def python_problem(python: str) -> str | None:
    """Why `python` cannot check a stats file (no such executable), or None; said before a calibration starts."""
    return None if _python_abs(python) is not None else f"{python[:200]!r} is not an executable interpreter"


def cached_check(python: str, path: str, model: ModelFacts, budgets: list[int]) -> StatsCheck | None:
    """The cached answer for this file (unchanged since), interpreter and request; None: none. Stats only."""
    python_abs, root = _python_abs(python), _root()
    real = os.path.realpath(path)
    if python_abs is None or root is None:
        return None
    req = _request(real, model, budgets)
    entry = read_json(_entry_path(root, python_abs, real, req))
    if not isinstance(entry, dict) or entry.get("schema") != CACHE_SCHEMA or not isinstance(entry.get("answer"), dict):
        return None
    if entry.get("stamp") != _stamp(real, python_abs):
        return None
    try:
        return StatsCheck.from_answer(path, entry["answer"], from_cache=True)
    except (TypeError, ValueError, AttributeError):
        return None


def run_check(python: str, path: str, model: ModelFacts, budgets: list[int], *, mode: str = "check",
              out: str | None = None, env: Mapping[str, str] | None = None) -> tuple[StatsCheck | None, str]:
    """The worker's check of `path` (cached when it was a check); (None, why) when it gave no answer."""
    if mode == "check":
        hit = cached_check(python, path, model, budgets)
        if hit is not None:
            return hit, ""
    python_abs = _python_abs(python)
    if python_abs is None:
        return None, f"runtime.python {python} cannot be run"
    real = os.path.realpath(path)
    req = {**_request(real, model, budgets), "mode": mode, **({"out": out} if out else {})}
    r = _worker.run_worker(python_abs, WORKER, (), stdin=json.dumps(req), env=env, timeout_s=TIMEOUT_S)
    a = r.answer
    if a is None:
        tail = r.stderr_tail.strip().splitlines()
        return None, f"the stats check in {python_abs} gave no answer: {r.message}" + (
            f"; its stderr ends with: {tail[-1][:300]}" if tail else "")
    if a.get("problem") in ("no_torch", "request"):
        return None, f"the stats check in {python_abs}: {str(a.get('message'))[:300]}"
    try:
        found = StatsCheck.from_answer(path, a)
    except (TypeError, ValueError, AttributeError) as e:
        return None, f"the stats check in {python_abs} gave an answer of the wrong shape ({type(e).__name__})"
    root = _root()
    if mode == "check" and root is not None:
        write_json(_entry_path(root, python_abs, real, _request(real, model, budgets)),
                   {"schema": CACHE_SCHEMA, "path": real, "stamp": _stamp(real, python_abs), "answer": dict(a)})
    return found, ""


def newest_dump(tmp: str) -> str | None:
    """The recorder's newest dump in the private dir (expert_distribution_recorder_<time>.pt), a regular file."""
    best = None
    for n in os.listdir(tmp):
        p = os.path.join(tmp, n)
        if not (n.startswith("expert_distribution_recorder_") and n.endswith(".pt")):
            continue
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (best is None or st.st_mtime_ns > best[0]):
            best = (st.st_mtime_ns, p)
    return None if best is None else best[1]

# -- kt.expert_stats as the profile names it ---------------------------------------------------------------------

def budgets_for(model: ModelFacts, ratio: float | None) -> list[int]:
    """The GPU-expert totals a plan can ask of the mask: n per MoE layer for every n (sglang-kt's
    --kt-num-gpu-experts x MoE layers), and the ratio's total when a ratio is set (kt_ep_wrapper.py:4589-4612)."""
    layers = model.kt_moe_layers or len(model.moe_layers)
    out = [n * layers for n in range(model.num_experts + 1)]
    if ratio is not None:
        out.append(int(layers * model.num_experts * ratio))
    return out


def gather_stats(cfg, model: ModelFacts | None, gate: str) -> StatsFacts | None:
    """kt.expert_stats (or, for kt.expert_placement auto/frequency, the model's calibration) found and checked.

    gate: "run" (check and launch: the worker runs on a cache miss), "cached" (--dry-run: only a cached answer),
    "off" (--no-check: nothing read). None when placement needs no stats (no key set, not auto/frequency)."""
    stats, placement = cfg.kt.expert_stats, cfg.kt.expert_placement
    if stats is None and placement not in ("auto", "frequency"):
        return None
    if gate == "off" and stats is not None and not is_workload_name(stats):  # --no-check: the path as given
        return StatsFacts(path=os.path.abspath(os.path.expanduser(stats)), source="profile",
                          unchecked="not checked under --no-check", skipped=True)
    if model is None:
        return StatsFacts(path=None, source="none", missing="the model's shape is unknown (--no-check, or config.json "
                          "unread), so its calibrations were not looked up")
    fp = model_fingerprint(cfg.model.path, model)
    known = list_calibrations(fp)
    names = tuple(c["workload"] for c in known)
    workload = path = None
    source = "none"
    missing = ""
    if stats is not None and not is_workload_name(stats):
        path, source = os.path.abspath(os.path.expanduser(stats)), "profile"
        try:
            os.stat(path)
        except OSError as e:
            missing = f"{path}: {'not found' if isinstance(e, FileNotFoundError) else e.strerror or e}"
            path = None
        except ValueError:  # a NUL byte: no file has that name (KT-E304 names the value too)
            missing = f"{path!r}: holds a NUL byte, so no file has that name"
            path = None
    else:
        if stats is not None:
            workload = stats
        elif len(known) == 1:
            workload = known[0]["workload"]
        elif "default" in names:
            workload = "default"
        elif known:  # several and none named default: the newest
            workload = max(known, key=lambda c: float(c.get("written_at") or 0))["workload"]
        if workload is not None and workload in names:
            path, source = next(c["path"] for c in known if c["workload"] == workload), "calibration"
        elif workload is not None:
            bad = workload_problem(workload)
            missing = bad or (f"no calibration named {workload!r} for this model (fingerprint {fp}; "
                              f"calibrated: {', '.join(names) or 'none'})")
        else:
            missing = f"no calibration for this model yet (fingerprint {fp})"
    base = dict(path=path, source=source, workload=workload, missing=missing, calibrations=names, fingerprint=fp)
    if path is None:
        return StatsFacts(**base)
    if gate == "off":
        return StatsFacts(**base, unchecked="not checked under --no-check", skipped=True)
    python = cfg.runtime.python or sys.executable
    budgets = budgets_for(model, cfg.kt.gpu_experts_ratio)
    if gate == "cached":
        hit = cached_check(python, path, model, budgets)
        return StatsFacts(**base, check=hit, skipped=hit is None, unchecked="" if hit else
                          "--dry-run reads only a cached answer and there is none for this file yet (`kt-launch "
                          "check` checks it in runtime.python)")
    from kt_launch.facts.console import say

    if cached_check(python, path, model, budgets) is None:
        say(f"kt-launch: checking the expert stats {path} in {python} (torch.load, kt-kernel's mask function)...\n")
    found, why = run_check(python, path, model, budgets)
    return StatsFacts(**base, check=found, unchecked=why)
