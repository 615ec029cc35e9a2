"""The one event loop of `--supervise`, for a single instance and for a fleet alike.

Why one loop: every wait needs a deadline and every signal must be seen at once. One selector watches the
children's pipes, the /health polls in flight (run/health.py: one deadline per whole request) and a wake-up
pipe that the C-level signal handler writes to (signal.set_wakeup_fd; SIGCHLD included, so a death wakes
the loop too). Each turn reaps every child that exited (waitpid(-1, WNOHANG)): kt-launch is a subreaper,
so orphans of the servers come back to it and would pile up as zombies otherwise. Output is passed on a
chunk at a time with secrets masked, by one writer thread per stream, so a paused terminal never stalls
the loop; phases are recognised only until the server is ready.
"""

from __future__ import annotations

import collections
import fcntl
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Callable

from kt_launch.facts.console import escape_controls
from kt_launch.render.redact import longest_secret, scrub, scrub_bytes
from kt_launch.run.crashes import KEEP
from kt_launch.run.health import HealthProbe
from kt_launch.run.matching import Rx, candidate_lines, first_line, lowered, needle_index, rx

ERROR_PHASE = "error in the log"
# Phases of an SGLang start-up, recognised from its log lines (the first match in this order wins; the last line
# that matched one sets the phase). Each is a run/matching.py Rx: linear on any line.
PHASES: tuple[tuple[Rx, str], ...] = (
    (rx(r"Traceback \(most recent call last\)|^\s*+(?>[\w.]*?(?:Error|Exception)\b):"), ERROR_PHASE),
    (rx(r"Init torch distributed", re.I), "init torch distributed"),
    (rx(r"Load weight", re.I), "load weight"),
    (rx(r"Loading safetensors|checkpoint shards", re.I), "load weight (safetensors)"),
    (rx(r"\bKT\b|kt_kernel|kt-kernel|KTMoE|CPUInfer|\bAMX"), "KT (kt-kernel experts)"),
    (rx(r"LoRA|lora_path|adapter", re.I), "LoRA adapters"),
    (rx(r"Memory pool|KV Cache is allocated|max_total_num_tokens", re.I), "KV cache"),
    (rx(r"Capture cuda graph|Capturing batches|cuda graph", re.I), "capture cuda graph"),
    (rx(r"Uvicorn running|Application startup complete|server is fired up", re.I), "server up"),
)
_MATCHERS: tuple[Rx, ...] = tuple(p for p, _ in PHASES) + KEEP  # every pattern a line is kept for
_INDEX = needle_index(_MATCHERS)
_LONG_LINE = 65536
_BATCH = 1 << 20  # PhaseTracker: analyse output this much (or _STALE s) at a time
_STALE = 0.1
_HIGH, _LOW = 32 << 20, 8 << 20  # writer backlog: stop reading the children above, resume below
_F_SETPIPE_SZ = 1031
_LEFT_READS = 16  # Loop._read_left: reads of a dead child's pipe (1 MiB each; its buffer is at most 1 MiB)


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------

def write_bytes(stream: IO, data: bytes) -> None:
    try:
        buf = getattr(stream, "buffer", None)
        if buf is not None:
            stream.flush()
            buf.write(data)
            buf.flush()
        else:
            stream.write(data.decode("utf-8", "replace"))
            stream.flush()
    except (OSError, ValueError):  # closed terminal (SIGHUP), broken pipe: keep supervising
        pass


class Writer:
    """One thread writes to `stream` what the loop hands it, in order; the loop only appends to a queue."""

    def __init__(self, stream: IO):
        self.stream = stream
        self._q: collections.deque[bytes] = collections.deque()
        self._cv = threading.Condition()
        self.backlog = 0
        threading.Thread(target=self._run, daemon=True, name="kt-launch-writer").start()

    def put(self, data: bytes) -> None:
        if data:
            with self._cv:
                self._q.append(data)
                self.backlog += len(data)
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q:
                    self._cv.wait()
                data = b"".join(self._q)
                self._q.clear()
            write_bytes(self.stream, data)
            with self._cv:
                self.backlog -= len(data)
                self._cv.notify_all()

    def drain(self, deadline: float) -> None:
        with self._cv:
            while self.backlog and time.monotonic() < deadline:
                self._cv.wait(max(0.0, deadline - time.monotonic()))


def _encoding(stream: IO) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


class Console:
    """kt-launch's own lines and every child's output, secrets masked; a status line on a terminal is
    cleared before anything else is written, so it never garbles a log line."""

    def __init__(self, secrets: set[str], out: IO | None = None, err: IO | None = None, json: bool = False,
                 stdout_taken: bool = False):
        self.secrets = secrets
        out, err = out or sys.stdout, err or sys.stderr
        self.out, self.err = Writer(out), Writer(err)
        self.json = json  # --json: stdout carries only the events (render/events.py)
        # the children's stdout goes to stderr with their stderr where stdout is kt-launch's own: the events, or the
        # result of a job run on the server (calibrate, bench --start)
        self.child_out = self.err if json or stdout_taken else self.out
        self._err_encoding = _encoding(err)
        self.status_shown = False
        try:
            self.tty = err.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def _text(self, text: str) -> bytes:  # kt-launch's own lines: control characters escaped (facts/console.py)
        return escape_controls(scrub(text, self.secrets)).encode(self._err_encoding, "backslashreplace")

    def say(self, text: str) -> None:
        self._clear_status()
        self.err.put(self._text(text))

    def status(self, text: str) -> None:
        if self.tty:
            self.err.put(b"\r\033[K" + self._text(text))
            self.status_shown = True
        else:
            self.err.put(self._text(text + "\n"))

    def clear_status(self) -> None:
        self._clear_status()

    def _clear_status(self) -> None:
        if self.status_shown:
            self.err.put(b"\r\033[K")
            self.status_shown = False

    def event(self, event: dict) -> None:
        """One --json event as a line on stdout (secrets masked); nothing without --json."""
        if self.json:
            from kt_launch.render.events import event_line

            self.out.put(event_line(event, self.secrets).encode("ascii"))

    def child(self, writer: Writer, data: bytes) -> None:
        self._clear_status()
        writer.put(data)

    def drain(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        self.out.drain(end)
        self.err.drain(end)


class PhaseTracker:
    """The last start-up phase seen in a child's log, and the lines worth matching against known crashes
    (run/crashes.py). Runs until stop() at ready: after that the log is only passed on.

    Why batches: output is analysed up to 1 MB (or 0.1 s) at a time, and only the part that decides something
    is read line by line: the last `keep` matching lines (older ones would leave the deque anyway) and the last
    phase line; an error line before them (the error phase sticks) is found by one linear pass. Output without
    any needle costs a few C-level `find`s. So the cost is linear in the output whatever its lines hold."""

    def __init__(self, on_change: Callable[[str], None] | None = None, keep: int = 400):
        self._phase = "starting"
        self.active = True
        self._kept: collections.deque[str] = collections.deque(maxlen=keep)
        self.on_change = on_change
        self._pending = bytearray()
        self._since = 0.0

    @property
    def phase(self) -> str:
        self.flush()
        return self._phase

    def glance(self) -> str:
        """The phase, up to _STALE seconds behind the output (cheap enough for a status line each turn)."""
        if self._pending and time.monotonic() - self._since >= _STALE:
            self.flush()
        return self._phase

    @property
    def kept(self) -> collections.deque[str]:
        self.flush()
        return self._kept

    def stop(self) -> None:
        """Ready: what came before is analysed, what comes after is only passed on."""
        self.flush()
        self.active = False

    def scan(self, data: bytes) -> None:
        """The next complete lines of output (bytes, \\n or \\r ended)."""
        if not self.active or not data:
            return
        if not self._pending:
            self._since = time.monotonic()
        self._pending += data
        if len(self._pending) >= _BATCH or time.monotonic() - self._since >= _STALE:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data, low = lowered(bytes(self._pending))
        self._pending.clear()
        keep = self._kept.maxlen or 0
        region = 1 << 16
        while True:  # from the end: enough matching lines to fill `kept`, with a phase line among them
            start = low.rfind(b"\n", 0, max(0, len(low) - region)) + 1
            lines = self._matching(data, low, start)
            if start == 0 or (len(lines) >= keep and any(phase is not None for _, phase in lines)):
                break
            region *= 16
        if start and self._phase != ERROR_PHASE and not any(phase == ERROR_PHASE for _, phase in lines):
            line = first_line(PHASES[0][0], data[:start], skip=b"server_args=")
            if line is not None:
                self._phase_seen(line, ERROR_PHASE)
        for line, phase in lines:
            self._kept.append(line.strip())
            if phase is not None:
                self._phase_seen(line, phase)

    @staticmethod
    def _matching(data: bytes, low: bytes, start: int) -> list[tuple[str, str | None]]:
        """The lines from `start` that some pattern matches: (line, the phase it names or None)."""
        out = []
        n_phases = len(PHASES)
        for line, which in candidate_lines(data, low, _INDEX, start):
            # the needles were found in the line (candidate_lines): only the regex is left, on the window
            first = next((i for i in sorted(which) if _MATCHERS[i].pattern.search(line)), None)
            if first is not None and line.strip():
                out.append((line, PHASES[first][1] if first < n_phases else None))
        return out

    def _phase_seen(self, text: str, label: str) -> None:
        if "server_args=" in text or self._phase == ERROR_PHASE:  # SGLang's argument dump; errors stick
            return
        if label != self._phase:
            self._phase = label
            if self.on_change is not None:
                self.on_change(label)


_LINE_END = re.compile(rb"(\r\n|\r|\n)(?=.)", re.S)


class Tee:
    """One child pipe: complete lines (\\n or \\r ended) passed on with secrets masked, an optional `[name] `
    prefix, the tail kept, phases tracked. A very long line goes on in pieces, never cutting a secret in two."""

    def __init__(self, secrets: set[str], emit: Callable[[bytes], None], tail: collections.deque,
                 tracker: PhaseTracker | None = None, prefix: bytes = b""):
        self.secrets, self.emit, self.tail, self.tracker, self.prefix = secrets, emit, tail, tracker, prefix
        self.keep = max(0, longest_secret(secrets) - 1)  # a secret begun at the end may end in the next read
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        """The next bytes from the pipe; b"" at EOF."""
        if not chunk:
            if self.buf:
                self._out(self.buf)
                self.buf = b""
            return
        self.buf += chunk
        cut = max(self.buf.rfind(b"\n"), self.buf.rfind(b"\r"))
        if cut >= 0:
            done, self.buf = self.buf[:cut + 1], self.buf[cut + 1:]
            self._out(done)
        if len(self.buf) > _LONG_LINE:
            clean = scrub_bytes(self.buf, self.secrets, cut_copies=False) if self.secrets else self.buf
            cut = len(clean) - self.keep
            if cut > 0:
                self._out(clean[:cut])
                self.buf = clean[cut:]

    def _out(self, data: bytes) -> None:
        clean = scrub_bytes(data, self.secrets) if self.secrets else data
        if self.prefix:
            body = _LINE_END.sub(rb"\1" + self.prefix.replace(b"\\", b"\\\\"), clean) if b"\r" in clean else \
                clean[:-1].replace(b"\n", b"\n" + self.prefix) + clean[-1:]
            self.emit(self.prefix + body + (b"" if body.endswith((b"\n", b"\r")) else b"\n"))
        else:
            self.emit(clean)
        if self.tracker is not None and self.tracker.active:
            self.tracker.scan(clean)
        self._keep_tail(clean)

    def _keep_tail(self, clean: bytes) -> None:
        n = self.tail.maxlen or 0
        pieces = clean.rsplit(b"\n", n + 1)
        for piece in pieces[1:] if len(pieces) > n + 1 else pieces:
            for seg in piece.split(b"\r"):
                if seg.strip():
                    self.tail.append(seg.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------------------------
# Children: reaping
# ---------------------------------------------------------------------------------------------------------

_TRACKED: dict[int, subprocess.Popen] = {}


_REAPED: list[subprocess.Popen] = []  # ours, reaped, their pipes not yet read to the end (Loop.turn does)


def reap() -> None:
    """Reap every child that exited: ours (their Popen gets the exit code) and the orphans kt-launch, a
    subreaper, inherited. Everything in kt-launch reaps through here, so no exit code is lost."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        except OSError:
            return
        if pid == 0:
            return
        proc = _TRACKED.pop(pid, None)
        if proc is not None and proc.returncode is None:
            proc.returncode = os.waitstatus_to_exitcode(status)
            _REAPED.append(proc)


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------

class Loop:
    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self.pending: list[int] = []  # signals received and not yet taken
        self._previous: dict[int, object] = {}
        self._old_wakeup: int | None = None
        self._readers: dict[int, tuple[IO, Callable[[bytes], None]]] = {}
        self._probes: set[HealthProbe] = set()
        self._writers: list[Writer] = []
        self._paused = False

    # -- signals -------------------------------------------------------------------------------
    def install(self, sigs) -> None:
        """Record `sigs` (and wake on SIGCHLD); only the main thread can."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        except (ValueError, OSError):
            return
        for sig in (*sigs, signal.SIGCHLD):
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass

    def _on_signal(self, signum, frame) -> None:
        if signum != signal.SIGCHLD:
            self.pending.append(signum)

    def take_signals(self) -> list[int]:
        out, self.pending = self.pending, []
        return out

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def close(self) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                pass
        if self._old_wakeup is not None:
            try:
                signal.set_wakeup_fd(self._old_wakeup)
            except (ValueError, OSError):
                pass
        for fd in list(self._readers):
            self._close_reader(fd)
        self.sel.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # -- children ------------------------------------------------------------------------------
    def spawn(self, argv: list[str], env: dict[str, str], preexec, on_out: Callable[[bytes], None],
              on_err: Callable[[bytes], None]) -> subprocess.Popen:
        """Start a child in its own session; its pipes are read by the loop. Raises OSError."""
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec)
        _TRACKED[proc.pid] = proc
        for f, cb in ((proc.stdout, on_out), (proc.stderr, on_err)):
            try:
                fcntl.fcntl(f.fileno(), _F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups on a chatty child
            except OSError:
                pass
            os.set_blocking(f.fileno(), False)
            self._readers[f.fileno()] = (f, cb)
            self.sel.register(f.fileno(), selectors.EVENT_READ, lambda fd=f.fileno(): self._read(fd))
        return proc

    def watch_writers(self, *writers: Writer) -> None:
        self._writers += writers

    def _read(self, fd: int) -> bool:
        """One read of a child pipe passed on; whether it gave bytes (False: nothing yet, or EOF)."""
        try:
            data = os.read(fd, 1 << 20)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        cb = self._readers[fd][1]
        if not data:
            self._close_reader(fd)
        cb(data)
        return bool(data)

    def _close_reader(self, fd: int) -> None:
        f, _ = self._readers.pop(fd)
        if not self._paused:
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        try:
            f.close()
        except OSError:
            pass

    @property
    def reading(self) -> bool:
        """Whether some child pipe is still open."""
        return bool(self._readers)

    def _flow(self) -> None:
        backlog = max((w.backlog for w in self._writers), default=0)
        if not self._paused and backlog > _HIGH:
            self._paused = True
            for fd in self._readers:
                self.sel.unregister(fd)
        elif self._paused and backlog < _LOW:
            self._paused = False
            for fd in self._readers:
                self.sel.register(fd, selectors.EVENT_READ, lambda fd=fd: self._read(fd))

    # -- /health polls ---------------------------------------------------------------------------
    def probe(self, url: str, deadline: float, api_key: str | None = None) -> HealthProbe:
        p = HealthProbe(url, deadline, api_key)
        if not p.done:
            self._probes.add(p)
            self.sel.register(p.fileno(), p.events, lambda: self._step(p))
        return p

    def _step(self, p: HealthProbe) -> None:
        self.sel.unregister(p.fileno())
        p.step()
        if p.done:
            self._probes.discard(p)
        else:
            self.sel.register(p.fileno(), p.events, lambda: self._step(p))

    def _expire(self, now: float) -> None:
        for p in [p for p in self._probes if now >= p.deadline]:
            self.sel.unregister(p.fileno())
            self._probes.discard(p)
            p.finish(None)

    # -- one turn --------------------------------------------------------------------------------
    def turn(self, until: float) -> None:
        """Wait for output, a poll, a signal or a child's death, at most until `until` (monotonic); handle
        what came, reap the dead."""
        self._flow()
        until = min([until] + [p.deadline for p in self._probes])
        timeout = 0.0 if self.pending else max(0.0, until - time.monotonic())
        if self._paused:
            timeout = min(timeout, 0.05)
        for key, _ in self.sel.select(timeout):
            key.data()
        self._expire(time.monotonic())
        reap()
        while _REAPED:
            self._read_left(_REAPED.pop())

    def _read_left(self, proc: subprocess.Popen) -> None:
        """What a dead child wrote before it exited, read now: its exit is judged on its whole log (the crash
        line it printed last decides whether a restart could help), not on what the last select happened to
        see. A grandchild that keeps the pipe open and writes on cannot hold the turn: a bounded number of reads."""
        for f in (proc.stdout, proc.stderr):
            fd = f.fileno() if f is not None and not f.closed else None
            for _ in range(_LEFT_READS):
                if fd is None or fd not in self._readers or not self._read(fd):
                    break

    def pause(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Turn until `until`, or until `stop()` says so (checked after each turn)."""
        while time.monotonic() < until and not (stop is not None and stop()):
            self.turn(until)
