"""What the installed SGLang accepts, read from its own parser (launcher side).

SGLang is never imported here: importing it takes 3–25 s and, in sglang-kt, probes the GPU.
`read_sglang_facts(python)` runs ``sglang_worker.py`` under the target interpreter (the one
that will run the server), through the one worker client (`kt_launch.facts.worker`), and caches
the answer as JSON under ``<cache dir>/sglang/`` (`kt_launch.facts.cache.cache_dir`:
``$KT_LAUNCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/kt-launch``, else ``~/.cache/kt-launch``).

A cache entry is found by the interpreter's path (not its realpath: a venv's ``bin/python`` is a
symlink to the base interpreter, and two venvs must not share an entry) plus the environment
variables that change what it imports, and is valid while every stamp recorded with it still
matches. The stamps are plain ``os.stat``/``os.listdir`` results, taken without starting a
process and without importing anything:

* the interpreter (realpath, size, mtime) and its venv's ``pyvenv.cfg``;
* ``sglang/__init__.py`` and the ``sglang`` package folder (an install or upgrade rewrites them);
* the ``*.dist-info`` folders of sglang/sglang-kt and kt-kernel (name and version live in the
  folder name; an upgrade replaces the folder);
* kt-kernel's ``experts.py``;
* for every import folder of the target (its ``sys.path`` and site dirs as the worker saw them),
  the names in it that mention sglang or kt_kernel (a new install, an uninstall, an editable
  install's finder all change that list);
* the worker's own source hash (a new kt-launch re-reads).

So a warm hit costs one small file read and a dozen stats: no subprocess. Errors (interpreter
missing, sglang not installed, import failure, timeout) come back as ``SglangFacts(error=...)``
and are never cached: their cure (installing a missing dependency) changes nothing we stamp.
A cache entry of the wrong shape (hand-edited, another version's, half-written by a foreign tool)
is a miss and is rebuilt; an answer of the wrong shape from the worker is an error, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from kt_launch.core.sglang import OptionInfo, SglangFacts, worker_error_message  # noqa: F401  (OptionInfo: re-exported)
from kt_launch.facts import worker as _worker
from kt_launch.facts.console import say
from kt_launch.facts.cache import cache_dir as _cache_dir
from kt_launch.facts.cache import file_stamp, read_json, source_sha, warn_unusable, write_json
from kt_launch.facts.reader import RECORDED_FACTS, ReadError
from kt_launch.facts.reader import read_json as read_bounded

WORKER = Path(__file__).with_name("sglang_worker.py")
CACHE_SCHEMA = 1
# Environment variables that change which sglang the target interpreter imports.
_ENV_KEYS = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH")
_STDERR_TAIL = 3000


# -- the facts (their types: kt_launch/core/sglang.py) ---------------------------------------------

def load_sglang_facts_file(path: str | os.PathLike[str], python: str | None = None) -> SglangFacts:
    """Read a recorded worker answer (e.g. ``tests/data/parser_sglang-kt_0.7.2.json``)."""
    p = Path(path)
    try:
        data = read_bounded(p, RECORDED_FACTS)
    except ReadError as exc:
        return SglangFacts.failed(python or str(p), "worker_failed", f"cannot read SGLang facts file: {exc}")
    if not isinstance(data, dict):
        return SglangFacts.failed(python or str(p), "worker_failed", f"{p} does not hold a JSON object")
    return SglangFacts.from_worker_json(python or str(data.get("python") or p), data)


# -- locating the interpreter ----------------------------------------------------------------


def _resolve_python(python: str) -> str | None:
    """Absolute path of the interpreter, symlinks kept (venvs), or None if there is none."""
    if not python:
        return None
    if os.sep in python or (os.altsep and os.altsep in python):
        candidate = os.path.abspath(os.path.expanduser(python))
    else:
        found = shutil.which(python)
        if found is None:
            return None
        candidate = os.path.abspath(found)
    if not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
        return None
    return candidate


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """`cache_dir` when given (tests, contract venvs), else the shared cache dir's ``sglang/`` (None: no
    cache folder to trust; facts/cache.py has warned why)."""
    if cache_dir is not None:
        return Path(cache_dir)
    shared = _cache_dir()
    return None if shared is None else shared / "sglang"


def _env_signature(env: Mapping[str, str]) -> dict[str, str | None]:
    return {k: env.get(k) for k in _ENV_KEYS}


def _entry_path(root: Path, python_abs: str, env: Mapping[str, str]) -> Path:
    key = json.dumps([CACHE_SCHEMA, python_abs, _env_signature(env)], sort_keys=True)
    return root / f"facts-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


_worker_sha_memo: str | None = None


def _worker_sha() -> str:
    global _worker_sha_memo
    if _worker_sha_memo is None:
        _worker_sha_memo = source_sha(WORKER)
    return _worker_sha_memo


# -- stamps ---------------------------------------------------------------------------------


def _dir_stat(path: str | None) -> list[Any] | None:
    # A folder's size is meaningless across filesystems; mtime and inode are enough.
    s = file_stamp(path)
    return None if s is None else [s[0], s[2]]


def _relevant_names(folder: str) -> list[str] | None:
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    out = []
    for n in names:
        low = n.lower().replace("-", "_")
        if "sglang" in low or "kt_kernel" in low:
            out.append(n)
    return sorted(out)


def _stamp_dirs(data: Mapping[str, Any]) -> list[str]:
    dirs: list[str] = []
    for p in list(data.get("sys_path") or ()) + list(data.get("site_dirs") or ()):
        if isinstance(p, str) and p and p not in dirs and not p.endswith(".zip"):
            dirs.append(p)
    return dirs


def _take_stamps(python_abs: str, data: Mapping[str, Any]) -> dict[str, Any]:
    kt = data.get("kt_kernel") or {}
    real = os.path.realpath(python_abs)
    venv_cfg = os.path.join(os.path.dirname(os.path.dirname(python_abs)), "pyvenv.cfg")
    return {
        "python_real": real,
        "python": file_stamp(real),
        "pyvenv_cfg": file_stamp(venv_cfg),
        "sglang_init": [data.get("sglang_init"), file_stamp(data.get("sglang_init"))],
        "sglang_dir": [data.get("sglang_path"), _dir_stat(data.get("sglang_path"))],
        "dist_info": [data.get("dist_info"), _dir_stat(data.get("dist_info"))],
        "kt_dist_info": [kt.get("dist_info"), _dir_stat(kt.get("dist_info"))],
        "kt_experts_py": [kt.get("experts_py"), file_stamp(kt.get("experts_py"))],
        "listing": {d: _relevant_names(d) for d in _stamp_dirs(data)},
        "worker": _worker_sha(),
    }


def _stamps_hold(python_abs: str, stamps: Mapping[str, Any]) -> bool:
    try:
        real = os.path.realpath(python_abs)
        if stamps["python_real"] != real or stamps["python"] != file_stamp(real):
            return False
        venv_cfg = os.path.join(os.path.dirname(os.path.dirname(python_abs)), "pyvenv.cfg")
        if stamps["pyvenv_cfg"] != file_stamp(venv_cfg):
            return False
        if stamps["worker"] != _worker_sha():
            return False
        for key, fn in (
            ("sglang_init", file_stamp),
            ("sglang_dir", _dir_stat),
            ("dist_info", _dir_stat),
            ("kt_dist_info", _dir_stat),
            ("kt_experts_py", file_stamp),
        ):
            path, recorded = stamps[key]
            if path is not None and not isinstance(path, str):  # an int would stat a file descriptor
                return False
            if fn(path) != recorded:
                return False
        listing = stamps["listing"]
        if not isinstance(listing, dict):
            return False
        for folder, names in listing.items():
            if _relevant_names(folder) != names:
                return False
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return True


# -- cache I/O ------------------------------------------------------------------------------


_STR_KEYS = ("python", "distribution", "version", "python_version", "sglang_path", "sglang_init", "dist_info",
             "error", "error_kind", "traceback", "stderr_tail")
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "dest": (str,), "action": (str, type(None)), "type": (str, type(None)), "nargs": (int, str, type(None)),
    "required": (bool, type(None)), "help": (str, type(None)), "deprecated": (bool, type(None)),
    "choices": (list, type(None)),
}


def _str_list(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def facts_problem(data: Any) -> str | None:
    """Why a worker answer (fresh or cached) is not one `SglangFacts.from_worker_json` can read, or None.

    Only the shape is checked (types of the keys that are read), so that a wrong type is a miss or an
    error with a message, never a TypeError deep in the launcher or a wrong value in a plan."""
    if not isinstance(data, dict):
        return "the answer is not a JSON object"
    if not isinstance(data.get("ok"), bool):
        return "'ok' is not true or false"
    for k in _STR_KEYS:
        if data.get(k) is not None and not isinstance(data[k], str):
            return f"'{k}' is not a string"
    if data.get("seconds") is not None and (isinstance(data["seconds"], bool)
                                            or not isinstance(data["seconds"], (int, float))):
        return "'seconds' is not a number"
    for k in ("warnings", "sys_path", "site_dirs"):
        if not _str_list(data.get(k)):
            return f"'{k}' is not a list of strings"
    kt = data.get("kt_kernel")
    if kt is not None:
        if not isinstance(kt, dict):
            return "'kt_kernel' is not an object"
        for k in ("version", "dist_info", "experts_py"):
            if kt.get(k) is not None and not isinstance(kt[k], str):
                return f"'kt_kernel.{k}' is not a string"
        for k in ("wants_gpu_experts_mask", "gpu_experts_mask_required"):
            if kt.get(k) is not None and not isinstance(kt[k], bool):
                return f"'kt_kernel.{k}' is not true, false or null"
        if not _str_list(kt.get("wrapper_params")):
            return "'kt_kernel.wrapper_params' is not a list of strings"
    calls = data.get("kt_wrapper_calls")
    if calls is not None:
        if not isinstance(calls, dict):
            return "'kt_wrapper_calls' is not an object"
        if calls.get("compatible") is not None and not isinstance(calls["compatible"], bool):
            return "'kt_wrapper_calls.compatible' is not true, false or null"
        if not _str_list(calls.get("missing_required")):
            return "'kt_wrapper_calls.missing_required' is not a list of strings"
    options = data.get("options")
    if options is not None and not isinstance(options, list):
        return "'options' is not a list"
    for i, o in enumerate(options or ()):
        if not isinstance(o, dict) or not _str_list(o.get("option_strings")):
            return f"options[{i}] is not an option object with a list of option strings"
        for k, types in _OPTION_TYPES.items():
            v = o.get(k)
            if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
                return f"options[{i}].{k} has the wrong type"
    return None


def _read_entry(path: Path, python_abs: str) -> Mapping[str, Any] | None:
    """The cached answer, or None (a miss) for anything unreadable, foreign, stale or of the wrong shape."""
    entry = read_json(path)  # bounded: a FIFO, /dev/zero or 1e400 here is a warning and a miss
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("schema") != CACHE_SCHEMA:
        return None  # another version's entry: a plain miss, rewritten by this one
    if entry.get("python") != python_abs:
        return None
    problem = facts_problem(entry.get("facts"))
    if problem is not None:
        warn_unusable(path, problem)
        return None
    stamps = entry.get("stamps")
    if not isinstance(stamps, dict) or not _stamps_hold(python_abs, stamps):
        return None
    return entry["facts"]


def _write_entry(path: Path, python_abs: str, env: Mapping[str, str], data: Mapping[str, Any]) -> None:
    """Atomic, best effort: a read-only or full cache dir costs speed, never correctness."""
    write_json(path, {
        "schema": CACHE_SCHEMA,
        "python": python_abs,
        "env": _env_signature(env),
        "written_at": time.time(),
        "stamps": _take_stamps(python_abs, data),
        "facts": data,
    })


# -- running the worker ---------------------------------------------------------------------


class SglangWorkerError(RuntimeError):
    """The worker could not answer (interpreter missing, import failure, timeout, crash)."""

    def __init__(self, message: str, kind: str = "worker_failed") -> None:
        super().__init__(message)
        self.kind = kind


class SglangParseError(ValueError):
    """SGLang's real parser rejected an argv (argparse's own message)."""

    def __init__(self, message: str, argv: Sequence[str]) -> None:
        super().__init__(message)
        self.message = message
        self.argv = tuple(argv)


def _run_worker(
    python_abs: str, mode: str, *, stdin: str | None, timeout_s: float, env: Mapping[str, str] | None
) -> Mapping[str, Any]:
    """The worker's JSON answer; raises SglangWorkerError when there is none."""
    r = _worker.run_worker(python_abs, WORKER, (mode,), stdin=stdin, env=env, timeout_s=timeout_s,
                           stderr_tail_chars=_STDERR_TAIL)
    if r.error_kind == _worker.TIMEOUT:
        raise SglangWorkerError(
            f"{python_abs} did not finish reading SGLang's parser within {timeout_s:g} s "
            "(importing sglang normally takes 3-25 s; raise the timeout if this machine is slow)",
            "timeout",
        )
    if r.error_kind == _worker.NOT_FOUND:
        raise SglangWorkerError(f"cannot run {python_abs}: {r.message}", "interpreter_missing")
    if r.answer is None:
        what = f"died with {r.signal}" if r.signal else (
            r.message if r.error_kind == _worker.OVERSIZE else f"exited with status {r.returncode}")
        raise SglangWorkerError(
            f"the SGLang introspection worker under {python_abs} {what} and no answer"
            + (f"; its stderr ends with:\n{r.stderr_tail}" if r.stderr_tail else ""),
            "worker_failed",
        )
    data = r.answer
    if mode == "facts":
        problem = facts_problem(data)
        if problem is not None:
            raise SglangWorkerError(f"the SGLang introspection worker under {python_abs} gave an answer "
                                    f"of the wrong shape: {problem}", "worker_failed")
    if not data.get("ok") and data.get("error_kind") == "import_failed":
        # The traceback lives in the JSON; stderr has the warnings SGLang printed first.
        data = dict(data)
        data.setdefault("stderr_tail", r.stderr_tail)
    return data


def read_sglang_facts(
    python: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 120,
    refresh: bool = False,
    env: Mapping[str, str] | None = None,
) -> SglangFacts:
    """Facts about the SGLang that ``python`` imports. Warm: from the on-disk cache with no
    subprocess. Cold (or ``refresh``): runs the worker (3-25 s) and caches a successful answer.
    Never raises for a missing interpreter, a missing or broken SGLang, or a timeout: the
    answer then has ``error`` set. ``env`` is the environment the server will run with
    (default: this process's)."""
    environ = os.environ if env is None else env
    python_abs = _resolve_python(python)
    if python_abs is None:
        return SglangFacts.failed(
            python,
            "interpreter_missing",
            f"Python interpreter not found or not executable: {python!r} (runtime.python); "
            "point it at the interpreter of the environment where sglang-kt or sglang is installed",
        )
    root = _cache_root(cache_dir)
    entry_path = None if root is None else _entry_path(root, python_abs, environ)
    if not refresh and entry_path is not None:
        cached = _read_entry(entry_path, python_abs)
        if cached is not None:
            return SglangFacts.from_worker_json(python, cached, from_cache=True)
    say(f"kt-launch: reading SGLang's parser from {python_abs} "
         f"({'first time only' if entry_path is not None else 'not cached'}; importing sglang takes 3-25 s)...\n")
    try:
        data = _run_worker(python_abs, "facts", stdin=None, timeout_s=timeout_s, env=env)
    except SglangWorkerError as exc:
        return SglangFacts.failed(python, exc.kind, str(exc))
    facts = SglangFacts.from_worker_json(python, data)
    if not facts.ok:
        return facts
    ran = data.get("python")
    if isinstance(ran, str) and ran and os.path.realpath(ran) != os.path.realpath(python_abs):
        # A wrapper (a pyenv shim, a shell script) picks its interpreter at run time, so no
        # stat of ours can tell when its answer changes: answer, but do not cache.
        return replace(
            facts,
            warnings=facts.warnings
            + (
                f"{python} is a wrapper that ran {ran}; set runtime.python to {ran} to let "
                "kt-launch cache what SGLang accepts (each run reads it afresh until then)",
            ),
        )
    if entry_path is not None:
        _write_entry(entry_path, python_abs, environ, data)
    return facts


def clear_sglang_facts_cache(cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Delete every cached answer; returns how many files went."""
    root = _cache_root(cache_dir)
    n = 0
    if root is None:
        return 0
    try:
        for p in root.glob("facts-*.json"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


# -- parsing with the real parser (contract tests) -------------------------------------------


@dataclass(frozen=True)
class ParseOutcome:
    argv: tuple[str, ...]
    ok: bool
    namespace: Mapping[str, Any] | None = field(default=None, hash=False)  # vars(namespace), JSON-safe
    error: str | None = None  # argparse's message when rejected


def parse_many_with_real_parser(
    python: str,
    argvs: Iterable[Sequence[str]],
    *,
    timeout_s: float = 600,
    env: Mapping[str, str] | None = None,
) -> list[ParseOutcome]:
    """Parse each argv with SGLang's own parser under ``python``, importing SGLang once for
    the whole batch. A rejected argv is an outcome with ``ok=False`` and argparse's message;
    a worker that cannot run raises SglangWorkerError."""
    batch = [[str(a) for a in argv] for argv in argvs]
    python_abs = _resolve_python(python)
    if python_abs is None:
        raise SglangWorkerError(f"Python interpreter not found or not executable: {python!r}", "interpreter_missing")
    data = _run_worker(python_abs, "parse", stdin=json.dumps(batch), timeout_s=timeout_s, env=env)
    if not data.get("ok"):
        raise SglangWorkerError(worker_error_message(python, data), str(data.get("error_kind") or "worker_failed"))
    results = data.get("results")
    if not isinstance(results, list) or len(results) != len(batch) or not all(isinstance(r, dict) for r in results):
        raise SglangWorkerError("the SGLang parse worker answered the wrong number or shape of results")
    out = []
    for argv, r in zip(batch, results):
        if r.get("ok"):
            ns = r.get("namespace")
            out.append(ParseOutcome(tuple(argv), True, MappingProxyType(dict(ns) if isinstance(ns, dict) else {})))
        else:
            out.append(ParseOutcome(tuple(argv), False, None, str(r.get("error"))))
    return out


def parse_with_real_parser(
    python: str, argv: Sequence[str], *, timeout_s: float = 300, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``vars(parser.parse_args(argv))`` from SGLang's own parser under ``python``, JSON-safe.
    Raises SglangParseError (argparse's message) if the parser rejects ``argv``."""
    (outcome,) = parse_many_with_real_parser(python, [argv], timeout_s=timeout_s, env=env)
    if not outcome.ok:
        raise SglangParseError(outcome.error or "rejected", argv)
    return dict(outcome.namespace or {})


__all__ = [
    "OptionInfo",
    "ParseOutcome",
    "SglangFacts",
    "SglangParseError",
    "SglangWorkerError",
    "clear_sglang_facts_cache",
    "load_sglang_facts_file",
    "parse_many_with_real_parser",
    "parse_with_real_parser",
    "read_sglang_facts",
]

if __name__ == "__main__":  # pragma: no cover - manual check: python -m kt_launch.facts.sglang PYTHON
    f = read_sglang_facts(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    print(f.describe(), f"{len(f.options)} option strings", "cached" if f.from_cache else "fresh")
