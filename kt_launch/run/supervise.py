"""Supervise mode (`--supervise`): run SGLang as a child instead of exec'ing it.

- The child gets its own session and process group; SIGINT/SIGTERM/SIGHUP sent to kt-launch are forwarded
  to the whole group. After the grace period the group is SIGKILLed (a second Ctrl+C does it at once).
  `kt run` SIGKILLs the server 0.25 s after Ctrl+C; here the server gets time to clean up.
- One event loop (run/loop.py) waits on everything with a deadline: the child's output, /health polls (one
  deadline per whole request, so a server that trickles bytes cannot hold up --ready-timeout), signals (they
  wake it at once) and the child's death. Children and the orphans kt-launch inherits are reaped each turn.
- Exit code: the child's; 128+N when it died by signal N; 128+N when kt-launch itself was stopped by signal
  N (130 Ctrl+C, 143 SIGTERM, 129 SIGHUP); 124 when it was not ready within --ready-timeout; 1 when it
  exited with 0 before it was ready (a failure is never exit 0); 2 when it cannot be started; 3 when its
  port is taken.
- --restart on-failure: a server that fails on its own (not stopped by kt-launch; any death but a clean exit 0
  after ready: `is_failure`, the one rule for a fleet's replicas too) is started again after its group is
  emptied, after 1, 2, 4 ... s, at most --max-restarts times in 10 min; not when its crash signature says the
  configuration caused it (run/crashes.py `deterministic`: the same argv would die the same way), and not when
  another process took its port meanwhile (the same port check as before the first start). Each run has its
  own log tail and crash findings.
- The group is emptied before kt-launch exits. kt-launch is a child subreaper (PR_SET_CHILD_SUBREAPER), so a
  descendant that left the group (setsid) comes back to it when its parent exits, and is stopped too.
- The server gets SIGKILL from the kernel if kt-launch itself dies (PR_SET_PDEATHSIG): SIGKILL on kt-launch
  leaves no server behind holding the port, even one that ignores SIGTERM (SGLang's own subprocesses use
  the same signal for the same reason).
- Before the start, the port must be free (checked also under --no-check): a server already listening there
  would answer /health and be reported ready. A busy port is exit 3, like the plan error KT-E232.
- The child's stdout/stderr are teed to kt-launch's, with secrets masked, and the tail is kept; a status
  line (elapsed time, last recognised phase) runs on stderr until `/health` answers 200. Then the OpenAI
  base URL and a ready-to-paste curl are printed. When the server dies, its tail is shown and then what a
  known crash signature in its output means (run/crashes.py).
"""

from __future__ import annotations

import collections
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from kt_launch.core.options import BY_KEY
from kt_launch.core.smoke import EXIT_SMOKE
from kt_launch.run.execute import exec_failure
from kt_launch.render.argv import Command
from kt_launch.resolve.ports import port_verdict
from kt_launch.render.redact import env_secret_values, redact_argv, scrub_findings, secret_values
from kt_launch.render.events import exit_event, ready_event, smoke_block, smoke_failed_event
from kt_launch.render.text import findings_text
from kt_launch.run.crashes import Diagnosis, Launched, diagnose
from kt_launch.run.health import base_url, curl_example
from kt_launch.run.loop import ERROR_PHASE, PHASES, Console, Loop, PhaseTracker, Tee, reap, write_bytes

__all__ = ["ERROR_PHASE", "PHASES", "Endpoint", "SuperviseOptions", "supervise", "launch_supervised"]

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_FAILED = 1  # kt-launch reports a failure whose own code was 0 (a server that exited 0 before ready)
EXIT_READY_TIMEOUT = 124
EXIT_CANNOT_START = 2
EXIT_PORT_BUSY = 3  # a plan error, as KT-E232 is when the checks run
PROBE_TIMEOUT = 2.0  # one /health request in all (connect, send, status line, headers)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class SuperviseOptions:
    grace_period: float = 30.0
    ready_timeout: float = 3600.0  # 0 = wait for ever
    poll_interval: float = 0.5
    tail_lines: int = 40
    status_every: float = 30.0  # without a terminal: a status line this often (and on each new phase)
    restart: bool = False  # --restart on-failure
    max_restarts: int = 3  # within restart_window seconds, per process
    restart_window: float = 600.0
    backoff: float = 1.0  # the first wait before a restart; doubled for each recent one, at most 60 s
    smoke: str = "off"  # --smoke: off | warn | on (the CLI's default is on; run/smoke.py, resolve/smoke.py)
    smoke_timeout: float = 300.0  # per smoke request
    # A job run once the server is ready (in a thread: the loop keeps pumping the server's output), given the base
    # URL; when it returns, the server is stopped and its return value is kt-launch's exit code (`kt-launch
    # calibrate`, `bench --start`); stdout is then the job's, and the server's output goes to stderr. None: serve
    # until stopped.
    after_ready: Callable[[str], int] | None = None
    json: bool = False  # --json: events on stdout (render/events.py), the server's output on stderr


class Restarts:
    """When a process that died on its own may start again: at most opts.max_restarts restarts within
    opts.restart_window seconds, after 1, 2, 4 ... s (capped at 60)."""

    def __init__(self, opts: SuperviseOptions):
        self.opts = opts
        self.times: collections.deque[float] = collections.deque()

    def delay(self, now: float) -> float | None:
        """Seconds to wait before the next restart, or None when no restart is allowed."""
        while self.times and self.times[0] < now - self.opts.restart_window:
            self.times.popleft()
        if not self.opts.restart or len(self.times) >= self.opts.max_restarts:
            return None
        return min(60.0, self.opts.backoff * 2 ** len(self.times))

    def record(self, now: float) -> int:
        self.times.append(now)
        return len(self.times)

    def gave_up(self, what: str) -> str:
        """`what` died N times: the line that ends the restarts ("SGLang died 3 times within 10 min ...")."""
        n = len(self.times) + 1
        return (f"{what} died {n} time{'s' if n != 1 else ''} within {self.opts.restart_window / 60:g} min "
                f"(--max-restarts {self.opts.max_restarts}): not restarting it again")


def is_failure(rc: int, ready: bool) -> bool:
    """--restart on-failure's one rule, for one instance and a fleet's replicas alike: every death is a failure
    but a clean exit (0) after the server was ready (an exit 0 before ready is a failure too: exit code 1)."""
    return not (rc == 0 and ready)


def deterministic_text(what: str, diagnosis: Diagnosis) -> str:
    """Why a crash is not restarted: its signature says the configuration caused it."""
    return (f"kt-launch: not restarting {what} (--restart on-failure): {diagnosis.because} says the configuration "
            "caused this crash, so the same command would fail the same way; apply its fix and start again\n")


def host_facts_warning(path: str) -> str:
    return (f"kt-launch: warning: --host-facts {path}: the plan was made for the recorded host in that file, "
            "not for this machine; threads, NUMA nodes and GPUs may not fit here\n")


# ---------------------------------------------------------------------------------------
# Output helpers kept for direct use (tests feed a real pipe through the same Tee)
# ---------------------------------------------------------------------------------------

class _Console:
    """Secrets and a tail: what _pump needs to pass one pipe on synchronously."""

    def __init__(self, secrets: set[str], tail_lines: int):
        self.secrets = secrets
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)


def _pump(fd: int, dest: IO, console: _Console) -> None:
    """Read a pipe until EOF and pass it on to `dest` as the supervisor does (blocking; for tests)."""
    tee = Tee(console.secrets, lambda data: write_bytes(dest, data), console.tail)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        tee.feed(chunk)
        if not chunk:
            return


def _write(stream: IO, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------------------
# Process group handling
# ---------------------------------------------------------------------------------------

def _killpg(pgid: int | None, sig: int) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    reap()
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


_reap_orphans = reap


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


def _child_setup(libc, cpus: frozenset[int] | None = None):
    """In the child before exec: die with SIGKILL if kt-launch itself is killed (no orphaned server), and run
    on `cpus` when given (a fleet replica on its NUMA node; threads the server starts inherit it).

    SIGKILL, not SIGTERM: when kt-launch is gone nobody is left to escalate, and a server that ignores or
    hangs on SIGTERM would keep the port and the GPUs. (An orderly stop never gets here: kt-launch forwards
    the signal and waits out the grace period itself.) preexec_fn runs between fork and exec while kt-launch
    has writer threads: it only makes system calls (prctl, sched_setaffinity, getppid), imports nothing,
    takes no lock those threads hold, and the CPU set was checked in the parent (a subset of kt-launch's)."""
    linux = sys.platform.startswith("linux")
    if not linux or (libc is None and not cpus):
        return None
    prctl = libc.prctl if libc is not None else None
    parent = os.getpid()
    setaffinity = os.sched_setaffinity

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # kt-launch already gone
                os._exit(1)
        if cpus:
            setaffinity(0, cpus)

    return setup


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def death_text(rc: int) -> str:
    return f"was killed by {_signame(-rc)}" if rc < 0 else f"exited with code {rc}"


def crash_report(lines, values: Mapping[str, Any] | None, rc: int | None, secrets: set[str],
                 argv=()) -> tuple[str, Diagnosis]:
    """What a known crash signature in `lines` means: findings text ('' when none matched) and the diagnosis.
    `values` and `argv`: the plan that was launched (advice never says to set a flag kt-launch passed)."""
    diag = diagnose(lines, Launched(values or {}, tuple(argv)), -rc if rc is not None and rc < 0 else None)
    if not diag.findings:
        return "", diag
    return "kt-launch: what that means:\n" + findings_text(scrub_findings(diag.findings, secrets)), diag


def crash_findings(lines, values: Mapping[str, Any] | None, rc: int | None, secrets: set[str], argv=()) -> str:
    return crash_report(lines, values, rc, secrets, argv)[0]


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
    chat: bool = True  # the model has a chat template (else the smoke test sends a plain completion)
    prefill_threshold: int | None = None  # kt.gpu_prefill_token_threshold: the smoke test's long request

    @classmethod
    def of(cls, plan, config) -> "Endpoint":
        from kt_launch.core.profile import lora_entries

        entries = lora_entries(config)
        adapter = (entries[0][0] or entries[0][1]) if entries else None
        host, port = (plan.get(k, BY_KEY[k].default) for k in ("server.host", "server.port"))  # registry defaults
        from kt_launch.facts.model import has_chat_template

        threshold = plan.get("kt.gpu_prefill_token_threshold")
        return cls(host=host, port=int(port),
                   model=plan.get("model.served_name") or plan.get("model.path") or "default",
                   api_key=plan.get("server.api_key"), lora_adapter=adapter,
                   chat=has_chat_template(plan.get("model.path")) is not False,
                   prefill_threshold=threshold if isinstance(threshold, int) else None)


@dataclass
class _State:
    grace: float
    pgid: int | None = None
    signals: list[int] = field(default_factory=list)
    kill_at: float | None = None
    killed: bool = False
    hurried: bool = False  # a second Ctrl+C asked for SIGKILL now
    stopping: str | None = None  # why the group was asked to stop
    announced: bool = False

    def on_signal(self, signum: int, now: float) -> None:
        self.signals.append(signum)
        if self.kill_at is None:
            self.kill_at = now + self.grace
            self.stopping = self.stopping or _signame(signum)
        elif signum == signal.SIGINT and len(self.signals) > 1:
            self.kill_at = now  # second Ctrl+C: do not wait any longer
            self.hurried = True
        _killpg(self.pgid, signum)


def supervise(cmd: Command, findings, endpoint: Endpoint, *, opts: SuperviseOptions | None = None,
              values: Mapping[str, Any] | None = None) -> int:
    """Run `cmd` under supervision; returns kt-launch's exit code. `values`: the plan's (for crash fixes)."""
    opts = opts or SuperviseOptions()
    secrets = secret_values(cmd.argv, cmd.env)
    # the server inherits kt-launch's environment too: an exported HF_TOKEN must not show up in its teed log
    secrets |= env_secret_values(os.environ)
    console = Console(secrets, json=opts.json, stdout_taken=opts.after_ready is not None)
    try:
        shown = [f for f in findings if f.level != "info"]
        if shown:
            console.say(findings_text(scrub_findings(shown, secrets)))
        busy = port_problem(endpoint.host, endpoint.port)
        if busy:
            console.say(f"kt-launch: error: {busy}; nothing was started\n")
            console.event(exit_event(EXIT_PORT_BUSY, "refused"))
            return EXIT_PORT_BUSY
        loop = Loop()
        loop.install(FORWARDED)
        try:
            return _Single(cmd, console, loop, opts, endpoint, values or {}).run()
        finally:
            loop.close()
    finally:
        console.drain()


class _Single:
    def __init__(self, cmd: Command, console: Console, loop: Loop, opts: SuperviseOptions, ep: Endpoint,
                 values: Mapping[str, Any]):
        self.cmd, self.console, self.loop, self.opts, self.ep, self.values = cmd, console, loop, opts, ep, values
        self.state = _State(grace=max(0.0, opts.grace_period))
        self.url = base_url(ep.host, ep.port)
        self.health = f"{self.url}/health"
        self.tail: collections.deque[str] = collections.deque(maxlen=opts.tail_lines)
        self.tracker = PhaseTracker(self._phase_changed)
        self.ready = self.timed_out = False
        self.start = time.monotonic()
        self.last_status = -1e9
        self.last_line = ""
        self.phase_changed = False
        self.smoke = None  # run/smoke.SmokeRun while the smoke requests are in flight
        self.smoke_failed = False  # --smoke on and a request failed: the server was stopped (EXIT_SMOKE)
        self.health_after = 0.0
        self.job: threading.Thread | None = None
        self.job_code: int | None = None
        self.restarted = False  # --restart on-failure started it again (its `ready` event says so)

    # -- output -----------------------------------------------------------------------------
    def waiting_line(self) -> str:
        return f"kt-launch: waiting for {self.health}: {time.monotonic() - self.start:5.0f}s, phase: {self.tracker.glance()}"

    def _phase_changed(self, label: str) -> None:
        if self.ready or self.state.kill_at is not None:
            return
        if self.console.tty:
            self.phase_changed = True
        else:  # a log: one line per new phase
            self.console.status(self.waiting_line())
            self.last_status = time.monotonic()

    def _status(self, now: float) -> None:
        line = self.waiting_line()
        if self.console.tty:
            if line != self.last_line or not self.console.status_shown:
                self.last_line = line
                self.console.status(line)
        elif self.phase_changed or now - self.last_status >= self.opts.status_every:
            self.phase_changed = False
            self.last_status = now
            self.console.status(line)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        st, console = self.state, self.console
        libc = _libc()
        _become_subreaper(libc)
        self.loop.watch_writers(console.out, console.err)
        restarts = Restarts(self.opts)
        console.say(f"kt-launch: starting (supervised, grace period {st.grace:g}s): "
                    f"{shlex.join(redact_argv(self.cmd.argv))}\n")
        after = ""  # said after the report (why a failure is not restarted)
        while True:
            proc = self._spawn(libc)
            if proc is None:
                console.event(exit_event(EXIT_CANNOT_START, "cannot_start"))
                return EXIT_CANNOT_START
            self._watch(proc)
            console.clear_status()
            self._empty_group()
            self._stop_strays()
            self.loop.pause(time.monotonic() + 2.0, lambda: not self.loop.reading)  # what is left in the pipes
            rc = proc.returncode
            self._smoke_after_exit()
            if (st.signals or self.timed_out or self.smoke_failed or not is_failure(rc, self.ready)
                    or not self.opts.restart):
                break
            diag = self._diagnose(rc)[1]
            if diag.deterministic:
                after = deterministic_text("SGLang", diag)
                break
            delay = restarts.delay(time.monotonic())
            if delay is None:
                console.say(f"kt-launch: error: {restarts.gave_up('SGLang')}\n")
                break
            self._explain(rc, "before it was ready" if not self.ready else "while serving")
            n = restarts.record(time.monotonic())
            console.say(f"kt-launch: restarting SGLang in {delay:g}s (restart {n} of at most "
                        f"{self.opts.max_restarts} within {self.opts.restart_window / 60:g} min)\n")
            self._wait(time.monotonic() + delay, lambda: bool(st.signals))
            if st.signals:
                console.say(f"kt-launch: stopped by {_signame(st.signals[0])} before the restart "
                            f"(exit code {128 + st.signals[0]})\n")
                console.event(exit_event(128 + st.signals[0], "signal", returncode=rc,
                                         signal=_signame(st.signals[0])))
                return 128 + st.signals[0]
            busy = port_problem(self.ep.host, self.ep.port)  # someone may have taken it while SGLang was down
            if busy:
                console.say(f"kt-launch: error: {busy}; not restarting SGLang\n")
                console.event(exit_event(EXIT_PORT_BUSY, "refused", returncode=rc))
                return EXIT_PORT_BUSY
            self._reset()
        code = self._exit_code(rc)
        self._report(rc, code)
        if after:
            console.say(after)
        if console.json:
            console.event(self._exit_event(rc, code))
        return code

    def _spawn(self, libc):
        console = self.console
        out = Tee(console.secrets, lambda d: console.child(console.child_out, d), self.tail, self.tracker)
        err = Tee(console.secrets, lambda d: console.child(console.err, d), self.tail, self.tracker)
        try:
            proc = self.loop.spawn(self.cmd.argv, {**os.environ, **self.cmd.env}, _child_setup(libc), out.feed,
                                   err.feed)
        except OSError as e:
            console.say(f"kt-launch: error: {exec_failure(self.cmd, e)}\n")
            return None
        except (ValueError, subprocess.SubprocessError) as e:
            console.say(f"kt-launch: error: cannot start {self.cmd.argv[0]}: {e} (runtime.python)\n")
            return None
        self.state.pgid = proc.pid  # start_new_session: the child leads its own group
        self.start = time.monotonic()
        return proc

    def _reset(self) -> None:
        """A fresh start: not ready, phases and the log tail from the beginning (a run's crash findings are its
        own), no stop pending."""
        self.ready = self.timed_out = self.smoke_failed = False
        self.smoke = None
        self.restarted = True
        self.tracker = PhaseTracker(self._phase_changed)
        self.tail = collections.deque(maxlen=self.opts.tail_lines)
        st = self.state
        st.kill_at, st.killed, st.hurried, st.stopping, st.announced = None, False, False, None, False
        self.last_status, self.last_line, self.phase_changed = -1e9, "", False

    def _explain(self, rc: int, when: str) -> None:
        self.console.say(f"kt-launch: error: SGLang {death_text(rc)} {when}; last phase: {self.tracker.phase}\n")
        self._show_tail()
        text = self._diagnose(rc)[0]
        if text:
            self.console.say(text)

    def _diagnose(self, rc: int) -> tuple[str, Diagnosis]:
        return crash_report([*self.tracker.kept, *self.tail], self.values, rc, self.console.secrets, self.cmd.argv)

    def _watch(self, proc) -> None:
        st, opts = self.state, self.opts
        probe = None
        next_poll = self.start
        while True:
            now = time.monotonic()
            wake = [now + 1.0]
            if st.kill_at is not None and not st.killed:
                wake.append(st.kill_at)
            if self.smoke is not None:
                wake.append(now + 0.1)
            if not self.ready and st.kill_at is None:
                if probe is None:
                    wake.append(next_poll)
                if opts.ready_timeout:
                    wake.append(self.start + opts.ready_timeout)
            self.loop.turn(min(wake))
            now = time.monotonic()
            for sig in self.loop.take_signals():
                st.on_signal(sig, now)
            if proc.returncode is not None:
                return
            if st.kill_at is not None:
                self._stopping(now)
                continue
            if self.job is not None and not self.job.is_alive():
                st.stopping = "the job after ready is done"
                st.kill_at = now + st.grace
                _killpg(st.pgid, signal.SIGTERM)
                continue
            if self.ready:
                if self.smoke is not None and self.smoke.done:
                    self._smoke_done(now)
                continue
            if probe is not None and probe.done:
                if probe.status == 200:
                    self._ready()
                    continue
                probe, next_poll = None, now + opts.poll_interval
            if probe is None and now >= next_poll:
                end = now + PROBE_TIMEOUT
                if opts.ready_timeout:
                    end = min(end, self.start + opts.ready_timeout)
                probe = self.loop.probe(self.health, end, self.ep.api_key)
            if opts.ready_timeout and now - self.start > opts.ready_timeout:
                self._ready_timeout(now)
                continue
            self._status(now)

    def _ready(self) -> None:
        self.ready = True
        self.tracker.stop()  # from here on the log is only passed on
        self.console.clear_status()
        self.health_after = time.monotonic() - self.start
        if self.opts.smoke == "off":
            _announce_ready(self.console, self.url, self.ep.model, self.ep.lora_adapter,
                            self.ep.api_key is not None, self.health_after)
            self.console.event(ready_event("server", self.url, self.ep.model, self.health_after, None,
                                           restarted=self.restarted))
            self._start_job()
            return
        from kt_launch.resolve.smoke import smoke_requests
        from kt_launch.run.smoke import SmokeRun, Target

        requests = smoke_requests(self.ep.chat, self.ep.prefill_threshold)
        self.console.say(f"kt-launch: /health answered after {self.health_after:.1f}s; smoke test (--smoke "
                         f"{self.opts.smoke}): {len(requests)} request(s) to {self.url}\n")
        self.smoke = SmokeRun([Target(self.url, self.url, self.ep.model, tuple(requests))], self.opts.smoke_timeout,
                              self.ep.api_key)

    def _smoke_done(self, now: float, dead: bool = False) -> None:
        """The smoke requests are back: judge them; pass -> the ready message with TTFT and tok/s; a failure ->
        its findings, then (--smoke on) stop the server, or (--smoke warn) keep serving."""
        from kt_launch.resolve.smoke import replies_json, smoke_findings, summary, too_short

        replies, self.smoke = self.smoke.replies, None
        fail = self.opts.smoke == "on"
        bad = smoke_findings(replies, self.url, list(self.tail), fail=fail)
        notes = too_short(replies)
        rows = replies_json(replies) if self.console.json else []
        if bad or notes:
            self.console.say(findings_text(scrub_findings(bad + notes, self.console.secrets)))
        if bad:
            self._show_tail()
            self.console.event(smoke_failed_event("server", None, self.url, self.opts.smoke, rows, bad,
                                                  list(self.tail), stopping=fail))
        if dead and (not fail or not bad):
            return  # the death report follows
        if not bad or not fail:
            if bad:
                self.console.say("kt-launch: warning: the smoke test failed (--smoke warn); SGLang keeps serving\n")
            _announce_ready(self.console, self.url, self.ep.model, self.ep.lora_adapter,
                            self.ep.api_key is not None, now - self.start,
                            f"smoke test: {summary(replies)}" if not bad else "smoke test: FAILED (see above)")
            self.console.event(ready_event("server", self.url, self.ep.model, now - self.start,
                                           smoke_block(self.opts.smoke, rows, bad + notes), restarted=self.restarted))
            if not bad:
                self._start_job()
            return
        self.smoke_failed = True
        st = self.state
        if not dead and st.kill_at is None:
            st.stopping = "smoke test failed (--smoke on)"
            st.kill_at = now + st.grace
            _killpg(st.pgid, signal.SIGTERM)

    def _smoke_after_exit(self) -> None:
        """The server exited while the smoke requests ran: their failure is reported (a crash on the second
        request), unless kt-launch itself was stopping it."""
        run, self.smoke = self.smoke, None
        if run is None:
            return
        if self.state.signals or self.state.kill_at is not None:
            run.stop()
            return
        end = time.monotonic() + 5.0
        while not run.done and time.monotonic() < end:
            self.loop.turn(min(end, time.monotonic() + 0.05))
        if not run.done:
            run.stop()
        self.smoke = run
        self._smoke_done(time.monotonic(), dead=True)

    def _start_job(self) -> None:
        """SuperviseOptions.after_ready (`kt-launch calibrate`'s workload), in a thread once the server is ready (and
        its smoke test passed); the loop stops the server when it returns (see _watch)."""
        if self.opts.after_ready is None or self.job is not None:
            return
        job = self.opts.after_ready

        def run_job() -> None:
            try:
                self.job_code = job(self.url)
            except Exception as e:  # noqa: BLE001 - reported, and the server is stopped all the same
                self.console.say(f"kt-launch: error: {type(e).__name__}: {e}\n")
                self.job_code = 1

        self.job = threading.Thread(target=run_job, name="after-ready", daemon=True)
        self.job.start()

    def _ready_timeout(self, now: float) -> None:
        st = self.state
        self.timed_out = True
        self.console.say(f"kt-launch: error: SGLang was not ready within {self.opts.ready_timeout:g}s "
                         f"(--ready-timeout); last phase: {self.tracker.phase}\n")
        self._show_tail()
        st.stopping = "ready timeout"
        st.kill_at = now + st.grace
        _killpg(st.pgid, signal.SIGTERM)

    def _stopping(self, now: float) -> None:
        st, console = self.state, self.console
        if not st.announced:
            st.announced = True
            console.say(f"kt-launch: {st.stopping or 'stop'}: stopping SGLang (process group {st.pgid}); SIGKILL in "
                        f"{st.grace:g}s if it is still running (Ctrl+C again: now)\n")
        if not st.killed and now >= st.kill_at:
            st.killed = True
            if st.hurried:
                console.say("kt-launch: Ctrl+C again: sending SIGKILL now\n")
            else:
                console.say(f"kt-launch: SGLang did not exit within {st.grace:g}s: sending SIGKILL\n")
            _killpg(st.pgid, signal.SIGKILL)

    # -- after the leader exited ------------------------------------------------------------------
    def _wait(self, until: float, done) -> None:
        """Turn the loop until `done()` or `until`; a second Ctrl+C meanwhile ends the wait at once."""
        st = self.state
        while not done() and time.monotonic() < until:
            self.loop.turn(min(until, time.monotonic() + 0.05))
            for sig in self.loop.take_signals():
                st.on_signal(sig, time.monotonic())
                if st.hurried:
                    st.killed = True
                    return

    def _deadline(self) -> float:
        st = self.state
        if st.killed:
            return time.monotonic()
        return st.kill_at if st.kill_at is not None else time.monotonic() + st.grace

    def _empty_group(self) -> None:
        """The leader has exited; stop whatever it left behind in its group (no orphans)."""
        st, pgid = self.state, self.state.pgid
        if pgid is None or not _group_alive(pgid):
            return
        if st.killed:
            _killpg(pgid, signal.SIGKILL)
        else:
            self.console.say(f"kt-launch: SGLang left processes in its group {pgid}: sending SIGTERM\n")
            _killpg(pgid, signal.SIGTERM)
        # one grace period in all: after a signal, what is left gets only what remains of it
        self._wait(self._deadline(), lambda: not _group_alive(pgid))
        if _group_alive(pgid):
            self.console.say(f"kt-launch: sending SIGKILL to what is left of process group {pgid}\n")
            _killpg(pgid, signal.SIGKILL)
            self._wait(time.monotonic() + 5.0, lambda: not _group_alive(pgid))

    def _stop_strays(self) -> None:
        """SIGTERM what is left outside the group, SIGKILL it when the grace period is over."""
        strays = _strays()
        if not strays:
            return
        pids = ", ".join(str(p.pid) for p in strays[:8])
        self.console.say(f"kt-launch: SGLang left {len(strays)} process(es) outside its group ({pids}): "
                         "sending SIGTERM\n")
        for p in strays:
            _signal_proc(p, signal.SIGKILL if self.state.killed else signal.SIGTERM)
        self._wait(self._deadline(), lambda: not _strays())
        left = _strays()
        if left:
            self.console.say(f"kt-launch: sending SIGKILL to {len(left)} process(es) SGLang left behind\n")
            for p in left:
                _signal_proc(p, signal.SIGKILL)
            self._wait(time.monotonic() + 5.0, lambda: not _strays())

    # -- the end --------------------------------------------------------------------------------
    def _exit_code(self, rc: int) -> int:
        st = self.state
        if st.signals:
            return 128 + st.signals[0]
        if self.smoke_failed:
            return EXIT_SMOKE
        if self.timed_out:
            return EXIT_READY_TIMEOUT
        if self.job_code is not None:
            return self.job_code
        if rc < 0:
            return 128 - rc
        return rc if rc or self.ready else EXIT_FAILED

    def _exit_event(self, rc: int, code: int) -> dict:
        """The `exit` event: the reason _exit_code decided by, the server's own returncode, and the findings of a
        known crash signature when the server died on its own."""
        st = self.state
        if st.signals:
            return exit_event(code, "signal", returncode=rc, signal=_signame(st.signals[0]))
        if self.smoke_failed:
            reason = "smoke_failed"
        elif self.timed_out:
            reason = "ready_timeout"
        elif self.job_code is not None:  # the job after ready (calibrate, which has no --json) stopped it
            reason = "exited"
        elif not self.ready:
            reason = "died_before_ready"
        else:
            reason = "died" if rc != 0 else "exited"
        crash = () if reason in ("ready_timeout", "exited") or (self.smoke_failed and st.stopping is not None) \
            else scrub_findings(self._diagnose(rc)[1].findings, self.console.secrets)
        return exit_event(code, reason, returncode=rc, findings=crash)

    def _report(self, rc: int, code: int) -> None:
        st, console = self.state, self.console
        how = death_text(rc)
        if st.signals:
            console.say(f"kt-launch: SGLang {how}; kt-launch was stopped by {_signame(st.signals[0])} "
                        f"(exit code {code})\n")
            return
        if self.timed_out:
            console.say(f"kt-launch: SGLang {how} after the ready timeout (exit code {code})\n")
            return
        if self.smoke_failed:
            console.say(f"kt-launch: error: the smoke test failed (--smoke on); SGLang {how} (exit code {code})\n")
            if st.stopping is None:  # it died on its own during the smoke test: what its crash signature says
                text = self._diagnose(rc)[0]
                if text:
                    console.say(text)
            return
        if self.job_code is not None:
            console.say(f"kt-launch: SGLang {how} (stopped once the job after ready was done)\n")
            return
        if not self.ready:
            console.say(f"kt-launch: error: SGLang {how} before it was ready (exit code {code}); last phase: "
                        f"{self.tracker.phase}\n")
            self._show_tail()
        elif rc != 0:
            console.say(f"kt-launch: error: SGLang {how} (exit code {code})\n")
            self._show_tail()
        else:
            console.say(f"kt-launch: SGLang {how} (exit code {code})\n")
            return
        text = self._diagnose(rc)[0]
        if text:
            console.say(text)

    def _show_tail(self) -> None:
        lines = list(self.tail)
        if not lines:
            self.console.say("kt-launch: SGLang printed nothing\n")
            return
        body = "".join(f"  | {line}\n" for line in lines)
        self.console.say(f"kt-launch: the last {len(lines)} lines of SGLang's output:\n{body}")


def _strays() -> list:
    """Live descendants of kt-launch: what SGLang left outside its process group (a setsid() daemon), which
    came back to kt-launch, the subreaper, when its parent exited."""
    import psutil

    reap()
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
    v = port_verdict(probe_port(host, number).status)
    if v is None:
        return None
    return f"{host}:{number} {v.why}: {v.effect}; {v.fix}"


def _announce_ready(console: Console, url: str, model: str, adapter: str | None, has_key: bool,
                    elapsed: float, smoke: str | None = None) -> None:
    curl = curl_example(url, model, adapter, has_key)
    lines = [f"kt-launch: SGLang is ready after {elapsed:.1f}s",
             *([f"  {smoke}"] if smoke else []),
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
    opts = options_of(args)
    restart_options(opts, args)
    smoke_options(opts, args, out.plan.get("server.smoke") or "on")
    opts.json = bool(getattr(args, "json", False))
    values = {k: r.value for k, r in out.plan.values.items()}
    return supervise(out.command, out.findings, Endpoint.of(out.plan, out.config), opts=opts, values=values)


def options_of(args) -> SuperviseOptions:
    """The options every supervised start takes from its command line (a launch, a fleet, `kt-launch calibrate`):
    --grace-period and --ready-timeout where given, else the defaults."""
    opts = SuperviseOptions()
    if getattr(args, "grace_period", None) is not None:
        opts.grace_period = args.grace_period
    if getattr(args, "ready_timeout", None) is not None:
        opts.ready_timeout = args.ready_timeout
    return opts


def smoke_options(opts: SuperviseOptions, args, profile: str = "on") -> None:
    """--smoke and --smoke-timeout onto the options (one instance and a fleet alike); --smoke beats the profile's
    server.smoke (default on)."""
    opts.smoke = getattr(args, "smoke", None) or profile
    if getattr(args, "smoke_timeout", None) is not None:
        opts.smoke_timeout = args.smoke_timeout


def restart_options(opts: SuperviseOptions, args, profile: str = "no") -> None:
    """--restart / --max-restarts onto the options (a fleet and one instance alike); --restart beats the
    profile's fleet.restart."""
    from kt_launch.core.errors import ConfigError

    chosen = getattr(args, "restart", None) or profile
    opts.restart = chosen == "on-failure"
    if getattr(args, "max_restarts", None) is not None:
        if not opts.restart:
            raise ConfigError("--max-restarts needs --restart on-failure (or fleet.restart: on-failure)")
        opts.max_restarts = args.max_restarts
