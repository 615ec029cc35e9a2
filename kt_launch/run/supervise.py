"""Supervise mode (`--supervise`): run SGLang as a child instead of exec'ing it.

- The child gets its own session and process group; SIGINT/SIGTERM/SIGHUP sent to kt-launch are forwarded
  to the whole group. After the grace period the group is SIGKILLed (a second Ctrl+C does it at once).
  `kt run` SIGKILLs the server 0.25 s after Ctrl+C; here the server gets time to clean up.
- Exit code: the child's; 128+N when it died by signal N; 128+N when kt-launch itself was stopped by
  signal N (130 Ctrl+C, 143 SIGTERM, 129 SIGHUP); 124 when it was not ready within --ready-timeout.
- The group is emptied before kt-launch exits. kt-launch is a child subreaper (PR_SET_CHILD_SUBREAPER), so a
  descendant that left the group (setsid) comes back to it when its parent exits, and is stopped too.
- The server gets SIGKILL from the kernel if kt-launch itself dies (PR_SET_PDEATHSIG): SIGKILL on kt-launch
  leaves no server behind holding the port, even one that ignores SIGTERM (SGLang's own subprocesses use
  the same signal for the same reason).
- Before the start, the port must be free (checked also under --no-check): a server already listening there
  would answer /health and be reported ready. A busy port is exit 3, like the plan error KT-E232.
- The child's stdout/stderr are teed to kt-launch's, with secrets masked, and the tail is kept; a status
  line (elapsed time, last recognised phase) runs on stderr until `/health` answers 200. Then the OpenAI
  base URL and a ready-to-paste curl are printed.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from kt_launch.render.argv import Command
from kt_launch.render.redact import is_secret_name, longest_secret, redact_argv, scrub, scrub_bytes, scrub_findings, \
    secret_values
from kt_launch.render.text import findings_text
from kt_launch.run.health import base_url, curl_example, poll_health

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_READY_TIMEOUT = 124
EXIT_CANNOT_START = 2
EXIT_PORT_BUSY = 3  # a plan error, as KT-E232 is when the checks run
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

ERROR_PHASE = "error in the log"
# Phases of an SGLang start-up, recognised from its log lines (the last match wins).
PHASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Traceback \(most recent call last\)|^\s*[\w.]*(Error|Exception)\b:"), ERROR_PHASE),
    (re.compile(r"Init torch distributed", re.I), "init torch distributed"),
    (re.compile(r"Load weight", re.I), "load weight"),
    (re.compile(r"Loading safetensors|checkpoint shards", re.I), "load weight (safetensors)"),
    (re.compile(r"\bKT\b|kt_kernel|kt-kernel|KTMoE|CPUInfer|\bAMX"), "KT (kt-kernel experts)"),
    (re.compile(r"LoRA|lora_path|adapter", re.I), "LoRA adapters"),
    (re.compile(r"Memory pool|KV Cache is allocated|max_total_num_tokens", re.I), "KV cache"),
    (re.compile(r"Capture cuda graph|Capturing batches|cuda graph", re.I), "capture cuda graph"),
    (re.compile(r"Uvicorn running|Application startup complete|server is fired up", re.I), "server up"),
)


@dataclass
class SuperviseOptions:
    grace_period: float = 30.0
    ready_timeout: float = 3600.0  # 0 = wait for ever
    poll_interval: float = 0.5
    tail_lines: int = 40
    status_every: float = 30.0  # without a terminal: a status line this often (and on each new phase)


def host_facts_warning(path: str) -> str:
    return (f"kt-launch: warning: --host-facts {path}: the plan was made for the recorded host in that file, "
            "not for this machine; threads, NUMA nodes and GPUs may not fit here\n")


# ---------------------------------------------------------------------------------------
# Output: tee the child's pipes, keep the tail, recognise phases, draw the status line
# ---------------------------------------------------------------------------------------

class _Console:
    """Everything written to the terminal goes through here, so the status line never garbles a log line."""

    def __init__(self, secrets: set[str], tail_lines: int):
        self.secrets = secrets
        # bytes held back at the end of a long piece of output: a secret begun there may end in the next read
        self.keep = max(0, longest_secret(secrets) - 1)
        self.lock = threading.Lock()
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.phase = "starting"
        self.phase_changed = False
        self.status_shown = False
        self.waiting_line = None  # callable -> the status text while waiting for readiness; None after
        try:
            self.tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    # -- kt-launch's own messages (stderr) --
    def say(self, text: str) -> None:
        with self.lock:
            self._clear_status()
            _write(sys.stderr, scrub(text, self.secrets))

    def status(self, text: str) -> None:
        with self.lock:
            if self.tty:
                _write(sys.stderr, "\r\033[K" + scrub(text, self.secrets))
                self.status_shown = True
            else:
                _write(sys.stderr, scrub(text, self.secrets) + "\n")

    def clear_status(self) -> None:
        with self.lock:
            self._clear_status()

    def _clear_status(self) -> None:
        if self.status_shown:
            _write(sys.stderr, "\r\033[K")
            self.status_shown = False

    def mask_whole(self, data: bytes) -> bytes:
        """Every complete occurrence of a secret masked (no partial ones: see _pump)."""
        return scrub_bytes(data, self.secrets, cut_copies=False)

    # -- the child's output --
    def child_line(self, data: bytes, dest: IO) -> None:
        clean = scrub_bytes(data, self.secrets)
        text = clean.decode("utf-8", "replace").rstrip("\r\n")
        with self.lock:
            self._clear_status()
            _write_bytes(dest, clean)
            if text.strip():
                self.tail.append(text)
                self._phase(text)

    def _phase(self, text: str) -> None:
        if "server_args=" in text or self.phase == ERROR_PHASE:  # SGLang's argument dump; errors stick
            return
        for pattern, label in PHASES:
            if pattern.search(text):
                if label != self.phase:
                    self.phase, self.phase_changed = label, True
                    if not self.tty and self.waiting_line is not None:  # a log: one line per new phase
                        self.phase_changed = False
                        _write(sys.stderr, scrub(self.waiting_line(), self.secrets) + "\n")
                return


def _write(stream: IO, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # closed terminal (SIGHUP), broken pipe: keep supervising
        pass


def _write_bytes(stream: IO, data: bytes) -> None:
    try:
        buf = getattr(stream, "buffer", None)
        if buf is not None:
            stream.flush()
            buf.write(data)
            buf.flush()
        else:
            stream.write(data.decode("utf-8", "replace"))
            stream.flush()
    except (OSError, ValueError):
        pass


def _pump(fd: int, dest: IO, console: _Console) -> None:
    """Read the child's pipe until EOF; pass complete lines (\\n or \\r ended) on. Never stops early:
    a child blocked on a full pipe would hang."""
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
        while True:
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
            if cut < 0:
                break
            lines = re.split(rb"(?<=[\r\n])", buf[:cut + 1])
            for line in lines:
                if line:
                    console.child_line(line, dest)
            buf = buf[cut + 1:]
        if len(buf) > 65536:  # a very long line: pass it on in pieces, never cutting a secret in two
            clean = console.mask_whole(buf)
            cut = len(clean) - console.keep
            if cut > 0:
                console.child_line(clean[:cut], dest)
                buf = clean[cut:]
    if buf:
        console.child_line(buf, dest)


# ---------------------------------------------------------------------------------------
# Process group handling
# ---------------------------------------------------------------------------------------

@dataclass
class _State:
    grace: float
    pgid: int | None = None
    signals: list[int] = field(default_factory=list)
    kill_at: float | None = None
    killed: bool = False
    hurried: bool = False  # a second Ctrl+C asked for SIGKILL now
    stopping: str | None = None  # why the group was asked to stop


def _killpg(pgid: int | None, sig: int) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    _reap_orphans()
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _reap_orphans() -> None:
    """As a child subreaper, kt-launch inherits the server's orphans; reap those that exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError:
            return
        if pid == 0:
            return


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _become_subreaper(libc) -> None:
    if libc is not None and sys.platform.startswith("linux"):
        try:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except Exception:
            pass


def _child_setup(libc):
    """In the child before exec: die with SIGKILL if kt-launch itself is killed (no orphaned server).

    SIGKILL, not SIGTERM: when kt-launch is gone nobody is left to escalate, and a server that ignores or
    hangs on SIGTERM would keep the port and the GPUs. (An orderly stop never gets here: kt-launch forwards
    the signal and waits out the grace period itself.)"""
    if libc is None or not sys.platform.startswith("linux"):
        return None
    prctl = libc.prctl
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # kt-launch already gone
            os._exit(1)

    return setup


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# ---------------------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """Where the server will answer, taken from the plan's values (never re-parsed from the argv)."""

    host: str
    port: int
    model: str
    api_key: str | None = None
    lora_adapter: str | None = None

    @classmethod
    def of(cls, plan, config) -> "Endpoint":
        from kt_launch.core.profile import lora_entries

        entries = lora_entries(config)
        adapter = (entries[0][0] or entries[0][1]) if entries else None
        return cls(host=plan.get("server.host") or "127.0.0.1", port=int(plan.get("server.port") or 30000),
                   model=plan.get("model.served_name") or plan.get("model.path") or "default",
                   api_key=plan.get("server.api_key"), lora_adapter=adapter)


def supervise(cmd: Command, findings, endpoint: Endpoint, *, opts: SuperviseOptions | None = None) -> int:
    """Run `cmd` under supervision; returns kt-launch's exit code."""
    opts = opts or SuperviseOptions()
    secrets = secret_values(cmd.argv, cmd.env)
    # the server inherits kt-launch's environment too: an exported HF_TOKEN must not show up in its teed log
    secrets |= {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 8}
    console = _Console(secrets, opts.tail_lines)
    shown = [f for f in findings if f.level != "info"]
    if shown:
        console.say(findings_text(scrub_findings(shown, secrets)))

    host, port, api_key, model = endpoint.host, endpoint.port, endpoint.api_key, endpoint.model
    lora_adapter = endpoint.lora_adapter
    url = base_url(host, port)

    busy = port_problem(host, port)
    if busy:
        console.say(f"kt-launch: error: {busy}; nothing was started\n")
        return EXIT_PORT_BUSY
    state = _State(grace=max(0.0, opts.grace_period))
    previous = _install_handlers(state)
    try:
        return _run(cmd, console, state, opts, url, model, lora_adapter, api_key)
    finally:
        _restore_handlers(previous)


def _restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler)
        except (OSError, ValueError, TypeError):
            pass


def _install_handlers(state: _State) -> dict:
    def on_signal(signum, frame):
        state.signals.append(signum)
        now = time.monotonic()
        if state.kill_at is None:
            state.kill_at = now + state.grace
            state.stopping = state.stopping or _signame(signum)
        elif signum == signal.SIGINT and len(state.signals) > 1:
            state.kill_at = now  # second Ctrl+C: do not wait any longer
            state.hurried = True
        _killpg(state.pgid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in FORWARDED:
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (OSError, ValueError):
                pass
    return previous


def _run(cmd: Command, console: _Console, state: _State, opts: SuperviseOptions, url: str, model: str,
         lora_adapter: str | None, api_key: str | None) -> int:
    env = {**os.environ, **cmd.env}
    libc = _libc()
    _become_subreaper(libc)
    shown_argv = shlex.join(redact_argv(cmd.argv))
    console.say(f"kt-launch: starting (supervised, grace period {state.grace:g}s): {shown_argv}\n")
    try:
        proc = subprocess.Popen(cmd.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_child_setup(libc))
    except OSError as e:
        console.say(f"kt-launch: error: cannot start {cmd.argv[0]}: {e.strerror or e} (runtime.python)\n")
        return EXIT_CANNOT_START
    state.pgid = proc.pid  # start_new_session: the child leads its own group
    if state.signals:  # a signal arrived while the child was being started
        _killpg(state.pgid, state.signals[0])
    pumps = [threading.Thread(target=_pump, args=(p.fileno(), dest, console), daemon=True)
             for p, dest in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
    for t in pumps:
        t.start()

    start = time.monotonic()
    ready = timed_out = False
    next_poll = start
    last_status = -1e9
    last_line = ""
    console.waiting_line = lambda: (f"kt-launch: waiting for {health}: {time.monotonic() - start:5.0f}s, "
                                    f"phase: {console.phase}")
    announced_stop = False
    health = f"{url}/health"
    while True:
        try:
            rc = proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if state.kill_at is not None:
            if not announced_stop:
                announced_stop = True
                console.waiting_line = None
                why = state.stopping or "stop"
                console.say(f"kt-launch: {why}: stopping SGLang (process group {state.pgid}); SIGKILL in "
                            f"{state.grace:g}s if it is still running (Ctrl+C again: now)\n")
            if not state.killed and now >= state.kill_at:
                state.killed = True
                if state.hurried:
                    console.say("kt-launch: Ctrl+C again: sending SIGKILL now\n")
                else:
                    console.say(f"kt-launch: SGLang did not exit within {state.grace:g}s: sending SIGKILL\n")
                _killpg(state.pgid, signal.SIGKILL)
            continue
        if ready:
            continue
        elapsed = now - start
        if now >= next_poll:
            status = poll_health(health, timeout=1.0, api_key=api_key)
            next_poll = time.monotonic() + opts.poll_interval
            if status == 200:
                ready = True
                console.waiting_line = None
                console.clear_status()
                _announce_ready(console, url, model, lora_adapter, api_key is not None, time.monotonic() - start)
                continue
        if opts.ready_timeout and elapsed > opts.ready_timeout:
            timed_out = True
            console.waiting_line = None
            console.say(f"kt-launch: error: SGLang was not ready within {opts.ready_timeout:g}s "
                        f"(--ready-timeout); last phase: {console.phase}\n")
            _show_tail(console)
            state.stopping = "ready timeout"
            state.kill_at = now + state.grace
            _killpg(state.pgid, signal.SIGTERM)
            continue
        line = console.waiting_line() if console.waiting_line else ""
        if console.tty:
            if line != last_line or not console.status_shown:
                last_line = line
                console.status(line)
        elif console.phase_changed or now - last_status >= opts.status_every:
            console.phase_changed = False
            last_status = now
            console.status(line)

    console.clear_status()
    _empty_group(state, console)
    _stop_strays(state, console)
    for t in pumps:
        t.join(timeout=2.0)
    for p in (proc.stdout, proc.stderr):
        try:
            p.close()
        except OSError:
            pass
    code = _exit_code(rc, state, timed_out)
    _report_exit(console, rc, code, state, ready, timed_out)
    return code


def _empty_group(state: _State, console: _Console) -> None:
    """The leader has exited; stop whatever it left behind in its group (no orphans)."""
    pgid = state.pgid
    if pgid is None or not _group_alive(pgid):
        return
    if state.killed:
        _killpg(pgid, signal.SIGKILL)
    else:
        console.say(f"kt-launch: SGLang left processes in its group {pgid}: sending SIGTERM\n")
        _killpg(pgid, signal.SIGTERM)
    # one grace period in all: after a signal, what is left gets only what remains of it
    deadline = state.kill_at if state.kill_at is not None else time.monotonic() + state.grace
    if state.killed:
        deadline = time.monotonic()
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        console.say(f"kt-launch: sending SIGKILL to what is left of process group {pgid}\n")
        _killpg(pgid, signal.SIGKILL)
        end = time.monotonic() + 5.0
        while _group_alive(pgid) and time.monotonic() < end:
            time.sleep(0.05)


def _strays() -> list:
    """Live descendants of kt-launch: what SGLang left outside its process group (a setsid() daemon), which
    came back to kt-launch, the subreaper, when its parent exited."""
    import psutil

    _reap_orphans()
    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _stop_strays(state: _State, console: _Console) -> None:
    """SIGTERM what is left outside the group, SIGKILL it when the grace period is over."""
    strays = _strays()
    if not strays:
        return
    pids = ", ".join(str(p.pid) for p in strays[:8])
    console.say(f"kt-launch: SGLang left {len(strays)} process(es) outside its group ({pids}): sending SIGTERM\n")
    for p in strays:
        _signal_proc(p, signal.SIGKILL if state.killed else signal.SIGTERM)
    # one grace period in all: after a signal, what is left gets only what remains of it
    deadline = time.monotonic() if state.killed else (
        state.kill_at if state.kill_at is not None else time.monotonic() + state.grace)
    while time.monotonic() < deadline and _strays():
        time.sleep(0.05)
    left = _strays()
    if left:
        console.say(f"kt-launch: sending SIGKILL to {len(left)} process(es) SGLang left behind\n")
        for p in left:
            _signal_proc(p, signal.SIGKILL)
        end = time.monotonic() + 5.0
        while _strays() and time.monotonic() < end:
            time.sleep(0.05)


def _signal_proc(p, sig: int) -> None:
    try:
        p.send_signal(sig)
    except Exception:  # psutil.NoSuchProcess / AccessDenied: gone, or not ours to stop
        pass


def port_problem(host: str, port: str) -> str | None:
    """Why SGLang could not listen on host:port here (in use, privileged), or None (free, or not knowable)."""
    from kt_launch.facts.artifacts import probe_port

    try:
        number = int(port)
    except ValueError:
        return None
    if not 0 < number < 65536:
        return None
    fact = probe_port(host, number)
    if fact.status == "in-use":
        return (f"{host}:{number} is already in use (another server?): SGLang could not listen there, and /health "
                "would be answered by the other server; stop it or pick a free port (--set server.port=...)")
    if fact.status == "no-permission":
        return f"{host}:{number} needs privileges to listen on (ports below 1024); pick a port above 1023"
    return None


def _exit_code(rc: int, state: _State, timed_out: bool) -> int:
    if state.signals:
        return 128 + state.signals[0]
    if timed_out:
        return EXIT_READY_TIMEOUT
    return 128 - rc if rc < 0 else rc


def _report_exit(console: _Console, rc: int, code: int, state: _State, ready: bool, timed_out: bool) -> None:
    how = f"was killed by {_signame(-rc)}" if rc < 0 else f"exited with code {rc}"
    if state.signals:
        console.say(f"kt-launch: SGLang {how}; kt-launch was stopped by {_signame(state.signals[0])} "
                    f"(exit code {code})\n")
    elif timed_out:
        console.say(f"kt-launch: SGLang {how} after the ready timeout (exit code {code})\n")
    elif not ready:
        console.say(f"kt-launch: error: SGLang {how} before it was ready (exit code {code}); last phase: "
                    f"{console.phase}\n")
        _show_tail(console)
    else:
        console.say(f"kt-launch: SGLang {how} (exit code {code})\n")


def _show_tail(console: _Console) -> None:
    lines = list(console.tail)
    if not lines:
        console.say("kt-launch: SGLang printed nothing\n")
        return
    body = "".join(f"  | {line}\n" for line in lines)
    console.say(f"kt-launch: the last {len(lines)} lines of SGLang's output:\n{body}")


def _announce_ready(console: _Console, url: str, model: str, adapter: str | None, has_key: bool,
                    elapsed: float) -> None:
    curl = curl_example(url, model, adapter, has_key)
    lines = [f"kt-launch: SGLang is ready after {elapsed:.1f}s",
             f"  OpenAI base URL: {url}/v1",
             "  try it:",
             f"    {curl[0]} \\",
             f"    {curl[1]}"]
    if has_key:
        lines.append("  (set API_KEY to the server's api key first; kt-launch never prints it)")
    if adapter is not None:
        lines.append(f"  (LoRA adapter: {adapter})")
    console.say("\n".join(lines) + "\n")


def launch_supervised(out, args) -> int:
    """cli entry: `out` is app.Outcome, `args` the parsed launch arguments."""
    opts = SuperviseOptions()
    if args.grace_period is not None:
        opts.grace_period = args.grace_period
    if args.ready_timeout is not None:
        opts.ready_timeout = args.ready_timeout
    return supervise(out.command, out.findings, Endpoint.of(out.plan, out.config), opts=opts)
