"""`--supervise` for a fleet: the local replicas, then the SGLang router in front of them.

- Each replica starts in its own session and process group; their output is teed with a `[name]` prefix,
  secrets masked. When every `/health` answers 200 the router starts (its own group too); when its `/health`
  answers, the OpenAI URL and a curl are printed.
- A replica that dies while serving is named and the rest keep serving (the router stops sending to it);
  with --fail-fast everything stops. A replica that dies before the fleet is ready, or the router dying,
  stops everything: there is no fleet to serve.
- Ctrl+C / SIGTERM / SIGHUP: the router is stopped first (no new requests reach dying replicas), then the
  replicas, all within one grace period; what is still running then is SIGKILLed (a second Ctrl+C: at once).
  kt-launch is a child subreaper, so nothing is left behind.
- Exit codes as for one instance: 128+N when kt-launch was stopped by signal N; the dead process's code (128+N
  for its signal N) when a death stopped the fleet; 124 when not ready within --ready-timeout; 2 when a
  process cannot be started; 0 otherwise.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from kt_launch.core.fleet import LOCAL
from kt_launch.render.argv import Command
from kt_launch.render.fleet import instance_findings, router_command, router_url
from kt_launch.render.redact import is_secret_name, redact_argv, scrub, scrub_bytes, scrub_findings, secret_values
from kt_launch.render.text import findings_text
from kt_launch.run.health import curl_example, poll_health
from kt_launch.run.supervise import (EXIT_CANNOT_START, EXIT_READY_TIMEOUT, FORWARDED, SuperviseOptions,
                                     _become_subreaper, _child_setup, _group_alive, _killpg, _libc, _pump,
                                     _reap_orphans, _restore_handlers, _signame, _write, _write_bytes)


@dataclass
class _Child:
    name: str
    cmd: Command
    url: str
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=40))
    proc: subprocess.Popen | None = None
    pumps: list[threading.Thread] = field(default_factory=list)
    ready: bool = False
    reported: bool = False

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class _Console:
    """kt-launch's own lines and every child's, whole lines at a time, secrets masked."""

    def __init__(self, secrets: set[str]):
        self.secrets = secrets
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        with self.lock:
            _write(sys.stderr, scrub(text, self.secrets))

    def for_child(self, child: _Child) -> "_ChildLines":
        return _ChildLines(self, child)


class _ChildLines:
    """What supervise._pump writes to: one child's lines, prefixed with its name."""

    def __init__(self, console: _Console, child: _Child):
        self.console, self.child = console, child
        self.prefix = f"[{child.name}] ".encode()

    def child_line(self, data: bytes, dest) -> None:
        clean = scrub_bytes(data, self.console.secrets)
        text = clean.decode("utf-8", "replace").rstrip("\r\n")
        with self.console.lock:
            _write_bytes(dest, self.prefix + clean if clean.endswith((b"\n", b"\r")) else self.prefix + clean + b"\n")
            if text.strip():
                self.child.tail.append(text)


@dataclass
class _State:
    grace: float
    signals: list[int] = field(default_factory=list)
    stop_at: float | None = None  # the end of the one grace period
    why: str | None = None
    code: int | None = None


class FleetSupervisor:
    def __init__(self, replicas: list[_Child], router: _Child | None, opts: SuperviseOptions, fail_fast: bool,
                 model: str, adapter: str | None, api_key: str | None, console: _Console):
        self.replicas, self.router, self.opts = replicas, router, opts
        self.fail_fast, self.model, self.adapter, self.api_key = fail_fast, model, adapter, api_key
        self.console = console
        self.state = _State(grace=max(0.0, opts.grace_period))
        self.libc = _libc()

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        st = self.state
        st.signals.append(signum)
        if st.stop_at is None:
            st.stop_at = time.monotonic() + st.grace
            st.why = st.why or _signame(signum)
        elif signum == signal.SIGINT and len(st.signals) > 1:
            st.stop_at = time.monotonic()  # second Ctrl+C: no more waiting

    def _install(self) -> dict:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED:
                try:
                    previous[sig] = signal.signal(sig, self._on_signal)
                except (OSError, ValueError):
                    pass
        return previous

    # -- processes ----------------------------------------------------------------------------
    def _start(self, child: _Child) -> bool:
        self.console.say(f"kt-launch: starting {child.name} ({child.url}): {shlex.join(redact_argv(child.cmd.argv))}\n")
        try:
            child.proc = subprocess.Popen(child.cmd.argv, env={**os.environ, **child.cmd.env}, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                          preexec_fn=_child_setup(self.libc))
        except OSError as e:
            self.console.say(f"kt-launch: error: cannot start {child.name}: {child.cmd.argv[0]}: {e.strerror or e}\n")
            return False
        lines = self.console.for_child(child)
        child.pumps = [threading.Thread(target=_pump, args=(p.fileno(), dest, lines), daemon=True)
                       for p, dest in ((child.proc.stdout, sys.stdout), (child.proc.stderr, sys.stderr))]
        for t in child.pumps:
            t.start()
        return True

    def _stop(self, why: str, code: int | None = None) -> None:
        st = self.state
        if st.stop_at is None:
            st.stop_at = time.monotonic() + st.grace
            st.why = why
        if st.code is None and code is not None:
            st.code = code

    def _children(self) -> list[_Child]:
        return ([self.router] if self.router is not None else []) + self.replicas

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        _become_subreaper(self.libc)
        previous = self._install()
        try:
            return self._run()
        finally:
            _restore_handlers(previous)

    def _run(self) -> int:
        st = self.state
        n = len(self.replicas)
        self.console.say(f"kt-launch: starting a fleet of {n} local instance{'s' if n != 1 else ''} "
                         f"(supervised, grace period {st.grace:g}s)\n")
        for c in self.replicas:
            if st.stop_at is not None:
                break
            if not self._start(c):
                self._stop("a replica could not be started", EXIT_CANNOT_START)
                break
        start = time.monotonic()
        phase = "replicas"
        next_poll = start
        while st.stop_at is None:
            time.sleep(0.05)
            self._check_deaths(phase)
            if st.stop_at is not None:
                break
            now = time.monotonic()
            if self.opts.ready_timeout and phase != "serving" and now - start > self.opts.ready_timeout:
                waiting = [c.name for c in self._children() if c.proc is not None and not c.ready] or ["the router"]
                self.console.say(f"kt-launch: error: not ready within {self.opts.ready_timeout:g}s (--ready-timeout): "
                                 f"{', '.join(waiting)}\n")
                self._stop("ready timeout", EXIT_READY_TIMEOUT)
                break
            if phase == "serving" or now < next_poll:
                continue
            next_poll = now + self.opts.poll_interval
            if phase == "replicas":
                for c in self.replicas:
                    if not c.ready and poll_health(f"{c.url}/health", timeout=1.0, api_key=self.api_key) == 200:
                        c.ready = True
                        self.console.say(f"kt-launch: {c.name} is ready after {time.monotonic() - start:.1f}s\n")
                if all(c.ready for c in self.replicas):
                    if self.router is None:
                        phase = "serving"
                        self._announce(None, time.monotonic() - start)
                    elif self._start(self.router):
                        phase = "router"
                    else:
                        self._stop("the router could not be started", EXIT_CANNOT_START)
            elif phase == "router":
                if poll_health(f"{self.router.url}/health", timeout=1.0) == 200:
                    self.router.ready = True
                    phase = "serving"
                    self._announce(self.router.url, time.monotonic() - start)
        self._shutdown()
        code = 128 + st.signals[0] if st.signals else (st.code if st.code is not None else 0)
        how = f"stopped by {_signame(st.signals[0])}" if st.signals else f"stopped ({st.why})"
        self.console.say(f"kt-launch: fleet {how}; exit code {code}\n")
        return code

    def _check_deaths(self, phase: str) -> None:
        for c in self._children():
            if c.proc is None or c.reported or c.proc.poll() is None:
                continue
            c.reported = True
            rc = c.proc.returncode
            code = 128 - rc if rc < 0 else rc
            how = f"was killed by {_signame(-rc)}" if rc < 0 else f"exited with code {rc}"
            if c is self.router:
                self.console.say(f"kt-launch: error: the router {how}; stopping the fleet\n")
                self._tail(c)
                self._stop("the router died", code)
            elif phase != "serving":
                self.console.say(f"kt-launch: error: replica {c.name} ({c.url}) {how} before the fleet was ready; "
                                 "stopping the fleet\n")
                self._tail(c)
                self._stop(f"{c.name} died", code)
            else:
                alive = [r.name for r in self.replicas if r.running()]
                self.console.say(f"kt-launch: error: replica {c.name} ({c.url}) {how}; "
                                 + (f"{len(alive)} of {len(self.replicas)} replicas still serving through the "
                                    f"router ({', '.join(alive)})\n" if alive else "no replica is left\n"))
                self._tail(c)
                if self.fail_fast:
                    self._stop(f"{c.name} died (--fail-fast)", code)
                elif not alive:
                    self._stop("every replica died", code)

    def _tail(self, c: _Child) -> None:
        lines = list(c.tail)[-15:]
        if lines:
            self.console.say(f"kt-launch: the last {len(lines)} lines of {c.name}:\n"
                             + "".join(f"  | {line}\n" for line in lines))

    def _announce(self, url: str | None, elapsed: float) -> None:
        if url is None:  # one host's part of a fleet: its router runs elsewhere
            urls = " ".join(c.url for c in self.replicas)
            self.console.say(f"kt-launch: {len(self.replicas)} instance(s) ready after {elapsed:.1f}s: {urls}\n"
                             "  (the fleet's router, on the machine that planned it, sends requests here)\n")
            return
        curl = curl_example(url, self.model, self.adapter, self.api_key is not None)
        lines = [f"kt-launch: the fleet is ready after {elapsed:.1f}s: {len(self.replicas)} local instance(s) behind "
                 "the router",
                 f"  OpenAI base URL: {url}/v1",
                 "  try it:", f"    {curl[0]} \\", f"    {curl[1]}"]
        if self.api_key is not None:
            lines.append("  (set API_KEY to the server's api key first; kt-launch never prints it)")
        self.console.say("\n".join(lines) + "\n")

    # -- stopping -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Router first, then the replicas, within the one grace period that began with the stop."""
        st = self.state
        sig = st.signals[0] if st.signals else signal.SIGTERM
        self.console.say(f"kt-launch: {st.why}: stopping the router, then the replicas; SIGKILL after "
                         f"{st.grace:g}s (Ctrl+C again: now)\n")
        if self.router is not None and self.router.proc is not None:
            _killpg(self.router.pgid, signal.SIGTERM)  # its graceful shutdown (SIGINT: a Python traceback)
            self._wait([self.router], share=0.5)
        for c in self.replicas:
            if c.proc is not None:
                _killpg(c.pgid, sig)
        self._wait(self.replicas, share=1.0)
        everything = [c for c in self._children() if c.proc is not None]
        for c in everything:  # the leaders are gone (or SIGKILLed); what they left in their groups goes now
            _killpg(c.pgid, signal.SIGKILL)
        end = time.monotonic() + 5.0
        while any(c.proc.poll() is None for c in everything) and time.monotonic() < end:
            time.sleep(0.05)
        _reap_orphans()  # every leader has been waited for: what is left to reap are orphans
        while any(c.pgid is not None and _group_alive(c.pgid) for c in everything) and time.monotonic() < end:
            time.sleep(0.05)
        for c in everything:
            for t in c.pumps:
                t.join(timeout=2.0)
            for p in (c.proc.stdout, c.proc.stderr):
                try:
                    p.close()
                except OSError:
                    pass
            if not c.reported and c.proc.returncode is not None:
                rc = c.proc.returncode
                if rc not in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL) and not st.signals:
                    self.console.say(f"kt-launch: {c.name} exited with code {rc} while stopping\n")

    def _wait(self, children: list[_Child], share: float) -> None:
        """Until those leaders exit, or `share` of what is left of the grace period; then SIGKILL their groups."""
        st = self.state
        deadline = time.monotonic() + max(0.0, (st.stop_at or time.monotonic()) - time.monotonic()) * share
        while any(c.running() for c in children):
            if time.monotonic() >= min(deadline, st.stop_at or deadline):
                names = [c.name for c in children if c.running()]
                self.console.say(f"kt-launch: {', '.join(names)} did not exit in time: sending SIGKILL\n")
                for c in children:
                    if c.running():
                        _killpg(c.pgid, signal.SIGKILL)
                break
            time.sleep(0.05)


def launch_fleet(out, args) -> int:
    """cli entry: `out` is app.FleetOutcome, `args` the parsed launch arguments."""
    from kt_launch.core.profile import lora_entries

    fp = out.plan
    opts = SuperviseOptions()
    if getattr(args, "grace_period", None) is not None:
        opts.grace_period = args.grace_period
    if getattr(args, "ready_timeout", None) is not None:
        opts.ready_timeout = args.ready_timeout
    secrets: set[str] = set()
    children = []
    for inst, cmd in zip(fp.instances, out.commands):
        secrets |= secret_values(cmd.argv, cmd.env)
        if fp.router is None or inst.replica.host == LOCAL:
            children.append(_Child(inst.replica.name, cmd, inst.replica.url))
    router = None
    if fp.router is not None:
        rc = router_command(fp.router)
        secrets |= secret_values(rc.argv, rc.env)
        router = _Child("router", rc, router_url(fp.router))
    secrets |= {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 8}
    console = _Console(secrets)
    shown = [f for f in fp.findings if f.level != "info"]
    for inst, cmd in zip(fp.instances, out.commands):
        shown += [f for f in instance_findings(inst, cmd) if f.level != "info" and f not in shown]
    if shown:
        console.say(findings_text(scrub_findings(shown, secrets)))
    for h in fp.hosts:
        console.say(f"kt-launch: host {h.name} runs its own part; run there: {shlex.join(redact_argv(list(h.argv)))}\n"
                    f"  (the router sends to {' '.join(h.urls) or 'none'})\n")
    if not children:
        console.say("kt-launch: no instance runs on this machine; starting the router only\n")
    first = fp.instances[0].plan if fp.instances else None
    model = (first.get("model.served_name") or first.get("model.path") or "default") if first else "default"
    entries = lora_entries(out.config)
    adapter = (entries[0][0] or entries[0][1]) if entries else None
    api_key = out.config.server.api_key
    sup = FleetSupervisor(children, router, opts, bool(getattr(args, "fail_fast", False)), model, adapter, api_key,
                          console)
    return sup.run()
