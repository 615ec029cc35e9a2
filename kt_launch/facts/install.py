"""The install gate's facts: one run of install_worker.py in runtime.python, cached until the install changes.

The worker reads the installed distributions' own requirements and imports what the server imports at start (it
takes 3-30 s: torch and SGLang load). Its answer is cached as JSON under ``<cache dir>/install/``, keyed like the
SGLang parser facts (facts/sglang.py) by the interpreter's path and the environment variables that change what it
imports, and valid while every stamp recorded with it holds. The stamps are what any ``pip install`` or
``pip uninstall`` changes, read with ``os.stat``/``os.listdir`` only (no process, no import):

* the interpreter (realpath, size, mtime) and its venv's ``pyvenv.cfg``;
* for every import folder of the target (``sys.path`` and site dirs as the worker saw them), the names of its
  ``*.dist-info``/``*.egg-info``/``*.egg-link``/``*.pth`` entries and the mtime and inode of each (pip writes a new
  dist-info folder for every install, reinstall or upgrade, and removes it on uninstall);
* the worker's own source hash.

So a warm `check` of an unchanged install starts no interpreter. A broken install's answer is cached too (its cure,
installing packages, changes the stamps); a worker that gave no answer (timeout, crash) is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from kt_launch.core.install import InstallFacts
from kt_launch.facts import worker as _worker
from kt_launch.facts.console import say
from kt_launch.facts.cache import cache_dir as _cache_dir
from kt_launch.facts.cache import file_stamp, read_json, source_sha, write_json

WORKER = Path(__file__).with_name("install_worker.py")
CACHE_SCHEMA = 1
_ENV_KEYS = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
             "KT_KERNEL_CPU_VARIANT")
_META_SUFFIXES = (".dist-info", ".egg-info", ".egg-link", ".pth")
TIMEOUT_S = 300.0


def server_env(environ: Mapping[str, str], runtime_env: Mapping[str, Any] | None) -> dict[str, str]:
    """The environment the gate's imports run with: this one plus runtime.env's entries that change what the server
    imports (KT_KERNEL_CPU_VARIANT picks kt-kernel's extension; PYTHONPATH and kin pick the packages), as the server
    gets them. An entry no process could take is left out (KT-E132 reports it)."""
    env = dict(environ)
    for k, v in (runtime_env or {}).items():
        if k in _ENV_KEYS and isinstance(v, str) and "\0" not in v:
            env[k] = v
    return env


def _resolve_python(python: str) -> str | None:
    from kt_launch.facts.sglang import _resolve_python as resolve  # one rule for "which file is this interpreter"

    return resolve(python)


def _folder_stamp(folder: str) -> dict[str, Any] | None:
    """The metadata entries of one import folder and their (mtime, inode); None: not a readable folder."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    out = {}
    for n in sorted(names):
        if n.endswith(_META_SUFFIXES):
            s = file_stamp(os.path.join(folder, n))
            out[n] = None if s is None else [s[0], s[2]]
    return out


def _folders(data: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for p in list(data.get("sys_path") or ()) + list(data.get("site_dirs") or ()):
        if isinstance(p, str) and p and os.path.isabs(p) and p not in out and not p.endswith(".zip"):
            out.append(p)
    return out


def _take_stamps(python_abs: str, data: Mapping[str, Any]) -> dict[str, Any]:
    real = os.path.realpath(python_abs)
    return {
        "python_real": real,
        "python": file_stamp(real),
        "pyvenv_cfg": file_stamp(os.path.join(os.path.dirname(os.path.dirname(python_abs)), "pyvenv.cfg")),
        "folders": {f: _folder_stamp(f) for f in _folders(data)},
        "worker": source_sha(WORKER),
    }


def _stamps_hold(python_abs: str, stamps: Any) -> bool:
    try:
        return stamps == _take_stamps(python_abs, {"sys_path": list(stamps["folders"])})
    except (KeyError, TypeError, AttributeError):
        return False


def _entry_path(root: Path, python_abs: str, env: Mapping[str, str]) -> Path:
    key = json.dumps([CACHE_SCHEMA, python_abs, {k: env.get(k) for k in _ENV_KEYS}], sort_keys=True)
    return root / f"gate-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _answer_problem(d: Any) -> str | None:
    """Why a worker answer (fresh or cached) cannot be read as InstallFacts, or None."""
    if not isinstance(d, dict) or d.get("ok") is not True:
        return "not an answer"
    try:
        InstallFacts.from_worker_json("-", d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"wrong shape ({type(e).__name__})"
    if not isinstance(d.get("dists") or {}, dict) or not all(isinstance(x, str) for x in _folders(d)):
        return "wrong shape"
    return None


def _root(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    if cache_dir is not None:
        return Path(cache_dir)
    shared = _cache_dir()
    return None if shared is None else shared / "install"


def cached_install_facts(python: str, *, cache_dir: str | os.PathLike[str] | None = None,
                         env: Mapping[str, str] | None = None) -> InstallFacts | None:
    """The cached answer for `python` when it still holds (a dozen stats, no process), else None."""
    environ = os.environ if env is None else env
    python_abs = _resolve_python(python)
    root = _root(cache_dir)
    if python_abs is None or root is None:
        return None
    entry = read_json(_entry_path(root, python_abs, environ))
    if not isinstance(entry, dict) or entry.get("schema") != CACHE_SCHEMA or entry.get("python") != python_abs:
        return None
    data = entry.get("answer")
    if _answer_problem(data) is not None or not _stamps_hold(python_abs, entry.get("stamps")):
        return None
    return InstallFacts.from_worker_json(python, data, from_cache=True)


def read_install_facts(python: str, *, cache_dir: str | os.PathLike[str] | None = None,
                       env: Mapping[str, str] | None = None, timeout_s: float = TIMEOUT_S) -> InstallFacts:
    """The install gate's facts for `python`: cached, else one worker run (then cached). Never raises."""
    environ = os.environ if env is None else env
    hit = cached_install_facts(python, cache_dir=cache_dir, env=environ)
    if hit is not None:
        return hit
    python_abs = _resolve_python(python)
    if python_abs is None:
        return InstallFacts.not_judged(python, f"{python} cannot be run", failed=True)
    root = _root(cache_dir)
    say(f"kt-launch: checking the install in {python_abs} (its requirements and the imports the server does at "
         f"start; {'once per install' if root is not None else 'not cached'}, 3-30 s)...\n")
    r = _worker.run_worker(python_abs, WORKER, ("gate",), env=env, timeout_s=timeout_s)
    problem = _answer_problem(r.answer) if r.answer is not None else None
    if r.answer is None or problem is not None:
        why = (r.message if r.answer is None else f"its answer had the {problem}") + (
            f"; its stderr ends with: {r.stderr_tail.strip().splitlines()[-1][:300]}"
            if r.stderr_tail.strip() else "")
        if isinstance(r.answer, dict) and r.answer.get("error"):
            why = str(r.answer["error"])[:300]
        return InstallFacts.not_judged(python, f"the install check in {python_abs} gave no answer: {why}", failed=True)
    ran = r.answer.get("python")
    if root is not None and (not isinstance(ran, str) or os.path.realpath(ran) == os.path.realpath(python_abs)):
        write_json(_entry_path(root, python_abs, environ), {
            "schema": CACHE_SCHEMA, "python": python_abs, "written_at": time.time(),
            "stamps": _take_stamps(python_abs, r.answer), "answer": r.answer})
    return InstallFacts.from_worker_json(python, r.answer)


