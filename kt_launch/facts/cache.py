"""The on-disk JSON cache for slow facts (nvidia-smi, the SGLang parser, tuning results), and the one
file writer of kt-launch.

Lives in $KT_LAUNCH_CACHE_DIR, else $XDG_CACHE_HOME/kt-launch, else ~/.cache/kt-launch; a folder another
user owns or others may write is not used (nor a missing home): kt-launch then runs uncached. Reads go
through the bounded reader (facts/reader.py): a cache file that is there but unusable (a FIFO, a
directory, too big, too deep, duplicate keys, NaN or 1e400) is a miss with one warning naming it, and
is rebuilt by the next write; it can never hang, crash or reach a plan. Every file kt-launch writes
(caches, `schema -o`) goes through `write_atomic`: a temp file next to the target, fsynced, renamed
over it; on any failure the temp file is removed and the old file is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from kt_launch.facts.reader import CACHE, Missing, ReadError
from kt_launch.facts.reader import read_json as _read_json


PATH_MAX = 4096 - 256  # room for the file names kt-launch puts under it (sglang/facts-<hash>.json)
NAME_MAX = 255


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache folder, or None when there is none to trust (one warning says why; kt-launch then runs
    uncached): no home (HOME unset or empty and no passwd entry), a relative base, a path too long, or a
    folder that another user owns or that others may write (they could plant what the next plan reads)."""
    env = os.environ if environ is None else environ
    base, why = _cache_base(env)
    if base is not None:
        why = _untrusted(base)
    if why is not None:
        _warn_once(f"cache:{why}", f"kt-launch: warning: no cache ({why}); kt-launch runs uncached, which is "
                   "slower; set KT_LAUNCH_CACHE_DIR to a folder of your own\n")
        return None
    return base


def _cache_base(env: Mapping[str, str]) -> tuple[Path | None, str | None]:
    if env.get("KT_LAUNCH_CACHE_DIR"):
        base, name = env["KT_LAUNCH_CACHE_DIR"], "KT_LAUNCH_CACHE_DIR"
    elif env.get("XDG_CACHE_HOME") and os.path.isabs(env["XDG_CACHE_HOME"]):  # the XDG spec ignores relative
        base, name = os.path.join(env["XDG_CACHE_HOME"], "kt-launch"), "XDG_CACHE_HOME"
    else:
        home = env.get("HOME") or _passwd_home()
        if not home or not os.path.isabs(home):
            return None, ("HOME is unset or empty and this user has no passwd entry" if not home
                          else f"HOME {_shown(home)} is not an absolute path")
        base, name = os.path.join(home, ".cache", "kt-launch"), "HOME"
    raw = os.fsencode(base)
    if len(raw) > PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return None, f"{name} is too long for a path ({len(raw)} bytes)"
    return Path(os.path.abspath(base)), None


def _passwd_home() -> str | None:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir or None
    except (KeyError, ImportError, OSError):
        return None


def _untrusted(path: Path) -> str | None:
    """Why a cache folder that exists must not be used (None: it is ours, or not there yet)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"{_shown(str(path))}: {e.strerror or e}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{_shown(str(path))} is not a directory"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"{_shown(str(path))} belongs to user id {st.st_uid}, not to you"
    if st.st_mode & stat.S_IWOTH:
        return f"{_shown(str(path))} is writable by every user (chmod o-w it)"
    return None


def _shown(text: str) -> str:
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]


def _warn_once(key: str, line: str) -> None:
    if key in _WARNED:
        return
    _WARNED.add(key)
    try:
        sys.stderr.write(line)
    except (OSError, ValueError):
        pass


_WARNED: set[str] = set()


def warn_unusable(path: str | os.PathLike, why: str) -> None:
    """One warning per cache file and process: it is ignored now and replaced by the next write. `why` names
    no file (a ReadError's reason)."""
    p = os.fspath(path)
    if p in _WARNED:
        return
    _WARNED.add(p)
    try:
        sys.stderr.write(f"kt-launch: warning: {CACHE.what} {p}: {why}; ignored, and rebuilt on the next write\n")
    except (OSError, ValueError):
        pass


def file_stamp(path: str | None) -> list[int] | None:
    """[mtime_ns, size, inode] of a file, None where there is none: what a cache entry records so that a changed
    install (a reinstalled interpreter, a new worker script) makes it stale."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


@functools.lru_cache(maxsize=None)
def source_sha(path: Path) -> str:
    """A short hash of a worker script's bytes (read once per process): a cache entry written by another version of
    the worker is stale."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_json(path: Path) -> Any | None:
    """The cached document, or None for a miss (absent, or unusable: then with a warning)."""
    try:
        return _read_json(path, CACHE)
    except Missing:
        return None
    except ReadError as e:
        warn_unusable(path, e.reason)
        return None


def write_json(path: Path, data: Any) -> bool:
    """Best effort: a cache that cannot be written is only slower, never an error. A symbolic link at `path`
    is replaced by the file, never followed (someone may have planted it to make kt-launch overwrite another)."""
    try:
        write_atomic(path, json.dumps(data, allow_nan=False), make_dirs=True, follow_symlinks=False)
        return True
    except (OSError, ValueError):
        return False


def write_atomic(path: str | os.PathLike, data: str | bytes, *, make_dirs: bool = False,
                 follow_symlinks: bool = True) -> None:
    """Replace `path` with `data` only once all of it is on disk. Raises OSError; leaves no temp file.

    A symlink is followed (its target is replaced, as `open(path, "w")` would write it) unless
    follow_symlinks is False (caches): then the link itself is replaced. Folders it makes are private (0700)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    target = Path(os.path.realpath(path)) if follow_symlinks else Path(os.path.abspath(path))
    if make_dirs:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0),
                 0o666)  # umask applies
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
    """A file the user named (`schema -o FILE`, `init -o FILE`): a regular file (or a new one) is replaced
    atomically; a character device that is already there (/dev/stdout on a terminal, /dev/null) is written in place,
    and so is a FIFO or pipe that a process reads now (`-o /dev/stdout | less`, `-o >(cat)`). A FIFO nobody reads is
    refused at once (it is opened without blocking: issue 23 item 14, it used to hang), and so are a socket and a
    block device. Raises OSError whose strerror says why."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a directory", os.fspath(path))
    if st is None or stat.S_ISREG(st.st_mode):
        write_atomic(path, data)
        return
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise OSError(errno.EINVAL, "not a regular file, FIFO or character device (a socket or block device); "
                                    "give a file path", os.fspath(path))
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO with no reader
            raise OSError(errno.ENXIO, "a FIFO that no process reads (it would wait forever); give a file path, or "
                                       "start the reader first", os.fspath(path)) from None
        raise
    try:
        os.set_blocking(fd, True)  # opened: a reader is there, write at its pace (a terminal too)
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[bool]:
    """An exclusive lock for a read-modify-write of the cache file `path` (fcntl.flock on `path`.lock, which is
    never replaced, unlike the file itself). Yields False when no lock could be had (the caller skips the write)."""
    try:
        import fcntl

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(f"{path}.lock", flags, 0o600)
    except (OSError, ImportError):
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock
