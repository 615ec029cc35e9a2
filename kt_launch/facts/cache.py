"""The on-disk JSON cache for slow facts (nvidia-smi, the SGLang parser, tuning results), and the one
file writer of kt-launch.

Lives in $KT_LAUNCH_CACHE_DIR, else $XDG_CACHE_HOME/kt-launch, else ~/.cache/kt-launch. Reads go
through the bounded reader (facts/reader.py): a cache file that is there but unusable (a FIFO, a
directory, too big, too deep, duplicate keys, NaN or 1e400) is a miss with one warning naming it, and
is rebuilt by the next write; it can never hang, crash or reach a plan. Every file kt-launch writes
(caches, `schema -o`) goes through `write_atomic`: a temp file next to the target, fsynced, renamed
over it; on any failure the temp file is removed and the old file is untouched.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Mapping

from kt_launch.facts.reader import CACHE, Missing, ReadError
from kt_launch.facts.reader import read_json as _read_json


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("KT_LAUNCH_CACHE_DIR") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache"), "kt-launch")
    return Path(base)


_WARNED: set[str] = set()


def warn_unusable(path: str | os.PathLike, why: str) -> None:
    """One warning per cache file and process: it is ignored now and replaced by the next write."""
    p = os.fspath(path)
    if p in _WARNED:
        return
    _WARNED.add(p)
    why = why if why.startswith(f"{CACHE.what} {p}") else f"{CACHE.what} {p}: {why}"
    try:
        sys.stderr.write(f"kt-launch: warning: {why}; ignored, and rebuilt on the next write\n")
    except (OSError, ValueError):
        pass


def read_json(path: Path) -> Any | None:
    """The cached document, or None for a miss (absent, or unusable: then with a warning)."""
    try:
        return _read_json(path, CACHE)
    except Missing:
        return None
    except ReadError as e:
        warn_unusable(path, str(e))
        return None


def write_json(path: Path, data: Any) -> bool:
    """Best effort: a cache that cannot be written is only slower, never an error."""
    try:
        write_atomic(path, json.dumps(data, allow_nan=False), make_dirs=True)
        return True
    except (OSError, ValueError):
        return False


def write_atomic(path: str | os.PathLike, data: str | bytes, *, make_dirs: bool = False) -> None:
    """Replace `path` with `data` only once all of it is on disk. Raises OSError; leaves no temp file.

    A symlink is followed (its target is replaced, as `open(path, "w")` would write it)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    target = Path(os.path.realpath(path))
    if make_dirs:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)  # umask applies
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_output(path: str | os.PathLike, data: str | bytes) -> None:
    """A file the user named (`schema -o FILE`): a regular file (or a new one) is replaced atomically; a
    device or FIFO that is already there (/dev/stdout, a pipe) is written in place. Raises OSError."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a directory", os.fspath(path))
    if st is None or stat.S_ISREG(st.st_mode):
        write_atomic(path, data)
        return
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
