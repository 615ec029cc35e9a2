"""The one client for "run code in the target interpreter and read one JSON answer".

SGLang's parser facts, the kt-kernel probe and tune all need an answer that only the interpreter
that will run the server can give (importing torch, sglang or kt_kernel here would cost seconds and
break `--dry-run`). `run_worker` starts ``[python, script, *args]`` (or ``python -m module``) in its
own session, feeds it stdin, and reads its answer: the last stdout line that is a JSON object.

Why each guard: the worker runs C++ extensions and thread pools that can hang or die by signal, and
they may fork helpers, so a timeout kills the whole process group; stdout is bounded (a runaway
print loop must not eat the launcher's memory) and only the tail of stderr is kept (that is where
the last error is). Every outcome, including "no such interpreter", is a `WorkerResult`, never an
exception, except kt-launch's own stop (KeyboardInterrupt, core.errors.Stopped), which passes through
after the worker's group is killed.

A worker dies with kt-launch (issue 23): this is the one place workers start, and each gets
PR_SET_PDEATHSIG = SIGKILL in the child before exec (Linux; SIGKILL on kt-launch, an OOM kill, a crash), and
while it runs SIGTERM/SIGHUP to kt-launch raise Stopped here, so the `finally` below kills its group before
kt-launch exits with 128 + the signal (cli.py). `pass_fds`: descriptors the worker keeps, such as a lock on its
output (convert), which then stays held for as long as either process lives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from kt_launch.core.errors import Stopped

# error kinds
NOT_FOUND = "not_found"  # no such interpreter (or not executable)
TIMEOUT = "timeout"
CRASHED = "crashed"  # died by a signal, no answer
NO_ANSWER = "no_answer"  # exited without a JSON object on stdout
OVERSIZE = "oversize"  # stdout past max_stdout_bytes: killed

MAX_STDOUT_BYTES = 64 << 20  # the largest real answer (SGLang's whole parser) is well under 1 MiB
STDERR_TAIL_CHARS = 3000
_CHUNK = 1 << 16


@dataclass(frozen=True)
class WorkerResult:
    """What one worker run gave: `answer` (a JSON object) or `error_kind` with a message."""

    answer: Mapping[str, Any] | None
    error_kind: str | None = None
    message: str = ""
    stderr_tail: str = ""
    returncode: int | None = None
    signal: str | None = None  # "SIGILL", ... when the process died by a signal
    seconds: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        return self.answer is not None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


_PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when kt-launch dies (Linux), or None where there is none.

    It runs between fork and exec: only system calls through a function looked up before the fork (no import,
    no lock). If kt-launch died before the prctl took effect, the child exits at once (its parent changed).
    The death signal follows the *thread* that forked: workers are started from the main thread only."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return setup


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """SIGTERM/SIGHUP raise Stopped in the main thread while the block runs (elsewhere: nothing changes), so
    whoever owns a child stops it on the way out; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum, frame):
        raise Stopped(signum, signal.Signals(signum).name)

    previous = {}
    for sig in signals:
        try:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:  # nohup: an ignored SIGHUP stays ignored
                continue
            previous[sig] = signal.signal(sig, raise_stopped)
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            try:
                signal.signal(sig, old)
            except (OSError, ValueError, TypeError):
                pass


def _signal_name(rc: int | None) -> str | None:
    """The signal a return code stands for: negative from Popen, or a shell's 128+n (SIGILL, SIGABRT, SIGSEGV)."""
    if rc is None:
        return None
    n = -rc if rc < 0 else (rc - 128 if rc in (128 + 4, 128 + 6, 128 + 9, 128 + 11) else 0)
    if n <= 0:
        return None
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _last_json_object(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode("utf-8", errors="replace").splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def run_worker(python: str, script: str | os.PathLike[str] | None = None, args: Sequence[str] = (), *,
               module: str | None = None, stdin: str | bytes | None = None, env: Mapping[str, str] | None = None,
               timeout_s: float = 120.0, max_stdout_bytes: int = MAX_STDOUT_BYTES,
               stderr_tail_chars: int = STDERR_TAIL_CHARS,
               stderr_line: Callable[[str], None] | None = None, pass_fds: Sequence[int] = ()) -> WorkerResult:
    """Run `script` (a file) or `module` under `python` with `args`; never raises for what the worker does.

    env None inherits this process's environment. The answer is the last stdout line holding a JSON
    object (workers route library noise to stderr, but a stray print before the answer is tolerated).
    stderr_line, when given, sees each stderr line as it arrives (a worker's progress records).
    """
    if (script is None) == (module is None):
        raise ValueError("run_worker needs exactly one of script or module")
    argv = [python, *(["-m", module] if module else [str(Path(script))]), *map(str, args)]
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    with stop_on_signals():
        return _run(argv, python, data, env, timeout_s, max_stdout_bytes, stderr_tail_chars, stderr_line,
                    tuple(pass_fds))


def _run(argv, python, data, env, timeout_s, max_stdout_bytes, stderr_tail_chars, stderr_line,
         pass_fds) -> WorkerResult:
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(env) if env is not None else None, start_new_session=True,
                                preexec_fn=die_with_parent(), pass_fds=pass_fds)
    except (FileNotFoundError, NotADirectoryError):
        return WorkerResult(None, NOT_FOUND, f"interpreter {python} not found")
    except PermissionError:
        return WorkerResult(None, NOT_FOUND, f"interpreter {python} is not executable")
    except OSError as e:  # ENOEXEC (not a program), E2BIG, ...
        return WorkerResult(None, NOT_FOUND, f"cannot run {python}: {e}")
    try:
        return _supervise(proc, data, t0, timeout_s, max_stdout_bytes, stderr_tail_chars, stderr_line)
    finally:
        if proc.poll() is None:  # kt-launch is stopping (Stopped, KeyboardInterrupt) or a bug: no worker left
            _kill_group(proc)
            proc.wait()


def _supervise(proc, data, t0, timeout_s, max_stdout_bytes, stderr_tail_chars, stderr_line) -> WorkerResult:
    out = bytearray()
    err_tail = bytearray()
    oversize = threading.Event()

    def feed() -> None:
        try:
            if data:
                proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            pass  # the worker exited without reading: its answer (or lack of one) says why
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def read_out() -> None:
        while chunk := proc.stdout.read1(_CHUNK):
            if len(out) + len(chunk) > max_stdout_bytes:
                oversize.set()
                _kill_group(proc)
                while proc.stdout.read1(_CHUNK):  # drain until the pipe closes
                    pass
                return
            out.extend(chunk)

    def read_err() -> None:
        keep = max(4 * stderr_tail_chars, _CHUNK)
        partial = bytearray()
        while chunk := proc.stderr.read1(_CHUNK):
            err_tail.extend(chunk)
            if stderr_line is not None:
                partial.extend(chunk)
                *lines, rest = partial.split(b"\n")
                partial[:] = rest[-_CHUNK:]
                for ln in lines:
                    try:
                        stderr_line(ln.decode("utf-8", errors="replace"))
                    except Exception:  # noqa: BLE001  (a display callback must not stop the reader)
                        pass
            if len(err_tail) > 2 * keep:
                del err_tail[:-keep]

    threads = [threading.Thread(target=f, daemon=True) for f in (feed, read_out, read_err)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            _kill_group(proc)  # also any helper the worker forked into its group
        proc.wait()
        for t in threads:
            t.join(timeout=5)  # a helper that left the group could hold a pipe open: do not wait on it
    seconds = time.monotonic() - t0
    tail = err_tail.decode("utf-8", errors="replace").strip()[-stderr_tail_chars:]
    rc = proc.returncode
    sig = None if timed_out else _signal_name(rc)
    common = dict(stderr_tail=tail, returncode=rc, seconds=seconds)
    if timed_out:
        return WorkerResult(None, TIMEOUT, f"did not finish within {timeout_s:g} s", **common)
    if oversize.is_set():
        return WorkerResult(None, OVERSIZE, f"wrote more than {max_stdout_bytes} bytes to stdout", **common)
    answer = _last_json_object(bytes(out))
    if answer is not None:
        return WorkerResult(answer, signal=sig, **common)
    if sig is not None:
        return WorkerResult(None, CRASHED, f"died with {sig}", signal=sig, **common)
    return WorkerResult(None, NO_ANSWER, f"exited with status {rc} and no answer", **common)
