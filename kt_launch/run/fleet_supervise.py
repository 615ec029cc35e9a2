"""`--supervise` for a fleet: the local replicas, then the SGLang router in front of them.

- What the plan already knows fails before anything starts: a router interpreter without sglang-router
  (KT-W710) and a local port that is taken are exit 3, with no replica started.
- Each replica starts in its own session and process group, on its NUMA node (run/placement.py: CPU
  affinity in the child before exec, `numactl --membind` when installed); their output is teed with a
  `[name]` prefix, secrets masked. When every `/health` answers 200 the router starts (its own group too);
  when its `/health` answers, the OpenAI URL and a curl are printed. Polls run in parallel, each with one
  deadline for the whole request, in the same event loop as one instance (run/loop.py), so --ready-timeout
  and signals are kept whatever a replica's /health does.
- A replica that dies while serving is named and the rest keep serving (the router stops sending to it);
  with --restart on-failure it starts again (its group emptied first, backoff 1, 2, 4 ... s, at most
  --max-restarts in 10 min) and rejoins the router, whose worker list names its URL; the rules are one
  instance's (supervise.py): a clean exit 0 after ready is no failure, a crash the configuration caused is not
  restarted, and a port another process took meanwhile is checked before the restart; with --fail-fast
  everything stops. A replica that dies before the fleet is ready, or the router dying,
  stops everything: there is no fleet to serve. The tail of the dead one's log is shown, then what a known
  crash signature in it means (run/crashes.py).
- Ctrl+C / SIGTERM / SIGHUP: the router is stopped first (no new requests reach dying replicas), then the
  replicas, all within one grace period; what is still running then is SIGKILLed (a second Ctrl+C: at once).
  kt-launch is a child subreaper, so nothing is left behind.
- Exit codes as for one instance: 128+N when kt-launch was stopped by signal N; the dead process's code (128+N
  for its signal N, 1 when it exited with 0) when a death stopped the fleet; 124 when not ready within
  --ready-timeout; 2 when a process cannot be started; 3 when the plan says it cannot run here. Never 0
  after a failure.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from kt_launch.core.fleet import Replica
from kt_launch.core.smoke import EXIT_SMOKE
from kt_launch.render.argv import Command
from kt_launch.render.events import exit_event, ready_event, smoke_block, smoke_failed_event
from kt_launch.render.fleet import instance_findings, router_command, router_url
from kt_launch.render.redact import env_secret_values, redact_argv, scrub_findings, secret_values
from kt_launch.render.text import findings_text
from kt_launch.resolve.fleet import router_install_line
from kt_launch.run.health import curl_example
from kt_launch.run.loop import Console, Loop, PhaseTracker, Tee
from kt_launch.run.placement import Placement, placements
from kt_launch.run.supervise import (EXIT_CANNOT_START, EXIT_FAILED, EXIT_PORT_BUSY, EXIT_READY_TIMEOUT, FORWARDED,
                                     PROBE_TIMEOUT, Restarts, SuperviseOptions, _become_subreaper, _child_setup,
                                     _group_alive, _killpg, _libc, _signame, crash_report, death_text,
                                     deterministic_text, is_failure, options_of, port_problem, restart_options,
                                     smoke_options)


@dataclass
class _Child:
    name: str
    cmd: Command
    url: str
    listen: tuple[str, int] | None = None  # what it binds here (checked free before anything starts)
    replica: Replica | None = None  # None for the router
    placement: Placement | None = None
    values: dict[str, Any] = field(default_factory=dict)  # its plan's values (for crash fixes)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=40))
    tracker: PhaseTracker = field(default_factory=PhaseTracker)
    proc: Any = None
    ready: bool = False
    reported: bool = False
    probe: Any = None
    next_poll: float = 0.0
    restarts: Restarts | None = None  # replicas only: --restart on-failure
    restart_at: float | None = None  # when it starts again (it died and may restart)
    smoke: tuple[list[dict], list] | None = None  # --json: its smoke rows and findings, for its `ready` event
    smoke_failed: bool = False  # restarted, failed its smoke test under --smoke on, stopped: never restarted

    def reset(self) -> None:
        """Before a restart: not ready, phases and the log tail from the beginning (a run's crash findings are
        its own)."""
        self.ready = self.reported = False
        self.tracker, self.probe = PhaseTracker(), None
        self.tail = collections.deque(maxlen=self.tail.maxlen)

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class _State:
    grace: float
    signals: list[int] = field(default_factory=list)
    stop_at: float | None = None  # the end of the one grace period
    why: str | None = None
    code: int | None = None
    reason: str | None = None  # the `exit` event's reason (render/events.EXIT_REASONS)
    child: Any = None  # the _Child whose death or failure stopped the fleet


class FleetSupervisor:
    def __init__(self, replicas: list[_Child], router: _Child | None, opts: SuperviseOptions, fail_fast: bool,
                 model: str, adapter: str | None, api_key: str | None, console: Console):
        self.replicas, self.router, self.opts = replicas, router, opts
        self.fail_fast, self.model, self.adapter, self.api_key = fail_fast, model, adapter, api_key
        self.console = console
        self.smoke = None  # run/smoke.SmokeRun in flight: the replicas', then the router's, then a restarted one's
        self.resmoke: list[_Child] = []  # replicas ready again after a restart, waiting for their smoke test
        self.smoke_note = ""  # the ready message's smoke line
        self.state = _State(grace=max(0.0, opts.grace_period))
        self.libc = _libc()
        self.loop = Loop()
        for c in replicas:
            c.restarts = Restarts(opts)

    # -- signals and turns ----------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        st = self.state
        st.signals.append(signum)
        if st.stop_at is None:
            st.stop_at = time.monotonic() + st.grace
            st.why = st.why or _signame(signum)
        elif signum == signal.SIGINT and len(st.signals) > 1:
            st.stop_at = time.monotonic()  # second Ctrl+C: no more waiting

    def _turn(self, until: float) -> None:
        self.loop.turn(until)
        for sig in self.loop.take_signals():
            self._on_signal(sig)

    # -- processes ----------------------------------------------------------------------------
    def _start(self, child: _Child) -> bool:
        self.console.say(f"kt-launch: starting {child.name} ({child.url}): {shlex.join(redact_argv(child.cmd.argv))}\n")
        prefix = f"[{child.name}] ".encode()
        c = self.console
        out = Tee(c.secrets, lambda d: c.child(c.child_out, d), child.tail, child.tracker, prefix)
        err = Tee(c.secrets, lambda d: c.child(c.err, d), child.tail, child.tracker, prefix)
        p = child.placement
        argv = p.wrap(list(child.cmd.argv)) if p is not None else list(child.cmd.argv)
        cpus = p.cpus if p is not None and p.cpus else None
        try:
            child.proc = self.loop.spawn(argv, {**os.environ, **child.cmd.env}, _child_setup(self.libc, cpus),
                                         out.feed, err.feed)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            what = getattr(e, "strerror", None) or e
            self.console.say(f"kt-launch: error: cannot start {child.name}: {argv[0]}: {what}\n")
            return False
        child.next_poll = time.monotonic()
        return True

    def _stop(self, why: str, code: int | None = None, reason: str | None = None, child: _Child | None = None) -> None:
        st = self.state
        if st.stop_at is None:
            st.stop_at = time.monotonic() + st.grace
            st.why = why
        if st.code is None and code is not None:
            st.code, st.reason, st.child = code, reason, child

    def _children(self) -> list[_Child]:
        return ([self.router] if self.router is not None else []) + self.replicas

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        _become_subreaper(self.libc)
        self.loop.install(FORWARDED)
        self.loop.watch_writers(self.console.out, self.console.err)
        try:
            return self._run()
        finally:
            self.loop.close()

    def _run(self) -> int:
        st = self.state
        n = len(self.replicas)
        self.console.say(f"kt-launch: starting a fleet of {n} local instance{'s' if n != 1 else ''} "
                         f"(supervised, grace period {st.grace:g}s)\n")
        for c in self.replicas:
            for sig in self.loop.take_signals():
                self._on_signal(sig)
            if st.stop_at is not None:
                break
            if not self._start(c):
                self._stop("a replica could not be started", EXIT_CANNOT_START, "cannot_start", c)
                break
        start = time.monotonic()
        phase = "replicas"
        while st.stop_at is None:
            now = time.monotonic()
            wake = [now + 1.0] + [c.next_poll for c in self._children() if c.running() and not c.ready
                                  and c.probe is None] + [c.restart_at for c in self.replicas if c.restart_at]
            if self.smoke is not None or self.resmoke:
                wake.append(now + 0.1)
            if self.opts.ready_timeout and phase in ("replicas", "router"):
                wake.append(start + self.opts.ready_timeout)
            self._turn(min(wake))
            self._check_deaths(phase)
            if st.stop_at is not None:
                break
            now = time.monotonic()
            if self.opts.ready_timeout and phase in ("replicas", "router") and now - start > self.opts.ready_timeout:
                waiting = [c.name for c in self._children() if c.proc is not None and not c.ready] or ["the router"]
                self.console.say(f"kt-launch: error: not ready within {self.opts.ready_timeout:g}s (--ready-timeout): "
                                 f"{', '.join(waiting)}\n")
                self._stop("ready timeout", EXIT_READY_TIMEOUT, "ready_timeout")
                break
            self._restart_due(now)
            for c in self.replicas:
                if self._poll(c, now, start, self.api_key):
                    self.console.say(f"kt-launch: {c.name} is ready after {time.monotonic() - start:.1f}s\n"
                                     if phase == "replicas" else f"kt-launch: {c.name} is ready again after its "
                                     "restart: it rejoins the router's workers\n")
                    if phase not in ("replicas", "replica smoke"):  # a restarted replica: smoked again first
                        if self.opts.smoke == "off":
                            self._ready_event(c, start, restarted=True)
                        else:
                            self.resmoke.append(c)
            if phase == "serving":
                self._resmoke(start)
            if phase == "replicas" and all(c.ready for c in self.replicas):
                phase = "replica smoke" if self._smoke(self.replicas) else "replicas smoked"
            if phase == "replica smoke" and self.smoke.done:
                phase = "replicas smoked" if self._smoke_judged() else "stopping"
            if phase == "replicas smoked":
                for c in self.replicas:
                    self._ready_event(c, start)
                if self.router is None:
                    phase = "serving"
                    self._announce(None, time.monotonic() - start)
                    self._ready_event(None, start)
                elif self._start(self.router):
                    phase = "router"
                else:
                    self._stop("the router could not be started", EXIT_CANNOT_START, "cannot_start", self.router)
            elif phase == "router" and self._poll(self.router, now, start, None):
                phase = "router smoke" if self._smoke([self.router]) else "router smoked"
            if phase == "router smoke" and self.smoke.done:
                phase = "router smoked" if self._smoke_judged() else "stopping"
            if phase == "router smoked":
                phase = "serving"
                self._announce(self.router.url, time.monotonic() - start)
                self._ready_event(self.router, start)
                self._ready_event(None, start)
        # a replica died during the fleet's smoke test (a crash on the second request): judge what came back (a
        # restarted replica's test is only stopped: its death decides)
        if self.smoke is not None and not st.signals and phase != "serving":
            self._until(time.monotonic() + 5.0, lambda: self.smoke.done)
            if self.smoke.done and not self._smoke_judged() and self.opts.smoke == "on":
                st.code, st.reason = EXIT_SMOKE, "smoke_failed"
        if self.smoke is not None:
            self.smoke.stop()
        self._shutdown()
        code = 128 + st.signals[0] if st.signals else (st.code if st.code is not None else EXIT_FAILED)
        how = f"stopped by {_signame(st.signals[0])}" if st.signals else f"stopped ({st.why})"
        self.console.say(f"kt-launch: fleet {how}; exit code {code}\n")
        if self.console.json:
            self.console.event(self._exit_event(code))
        return code

    # -- --json events --------------------------------------------------------------------------
    def _ready_event(self, c: _Child | None, start: float, restarted: bool = False) -> None:
        """`ready` of a replica or the router (c), or of the fleet (c None): after its smoke test was judged."""
        if not self.console.json:
            return
        after = time.monotonic() - start
        if c is None:
            url = self.router.url if self.router is not None else None
            self.console.event(ready_event("fleet", url, self.model, after, None,
                                           replicas=[{"name": r.name, "url": r.url} for r in self.replicas]))
            return
        smoke = None if c.smoke is None else smoke_block(self.opts.smoke, *c.smoke)
        self.console.event(ready_event("router" if c is self.router else "replica", c.url, self.model, after, smoke,
                                       name=c.name, restarted=restarted))

    def _exit_event(self, code: int) -> dict:
        st = self.state
        if st.signals:
            return exit_event(code, "signal", signal=_signame(st.signals[0]))
        c = st.child
        rc = c.proc.returncode if c is not None and c.proc is not None else None
        reason = st.reason or "died"
        crash = ()  # what a known crash signature in a replica's log means, when it died on its own
        if c is not None and c is not self.router and rc is not None and reason != "refused":
            crash = scrub_findings(self._crash(c)[1].findings, self.console.secrets)
        return exit_event(code, reason, name=c.name if c is not None else None, returncode=rc, findings=crash)

    # -- the smoke test ---------------------------------------------------------------------------
    def _resmoke(self, start: float) -> None:
        """While serving: a replica ready again after its restart gets the smoke test its first start got (one at a
        time). It passes: its `ready` event (restarted, with the figures). It fails under --smoke on: that replica
        is stopped and not restarted, the router keeps serving from the others (none left: exit 4); under warn it
        keeps serving. A replica that died again meanwhile is judged by its death, not by this test."""
        if self.smoke is not None and self.smoke.done:
            where = {target.where for target, _replies in self.smoke.results}
            c = next((r for r in self.replicas if r.name in where), None)
            if c is not None and c.running() and c.ready:
                if self._smoke_judged(restarted=c):
                    self._ready_event(c, start, restarted=True)
            else:
                self.smoke = None
        while self.smoke is None and self.resmoke:
            c = self.resmoke.pop(0)
            if c.running() and c.ready:
                self._smoke([c])

    def _smoke(self, children: list[_Child]) -> bool:
        """Start the smoke requests to `children` (each replica with its own plan's requests; the router: the
        first request once); False when --smoke off."""
        if self.opts.smoke == "off":
            return False
        from kt_launch.facts.model import has_chat_template
        from kt_launch.resolve.smoke import smoke_requests
        from kt_launch.run.smoke import SmokeRun, Target

        targets = []
        for c in children:
            if c is self.router:
                first = self.replicas[0].values if self.replicas else {}
                reqs = smoke_requests(has_chat_template(first.get("model.path")) is not False, None)[:1]
                targets.append(Target("the router", c.url, self.model, tuple(reqs)))
                continue
            threshold = c.values.get("kt.gpu_prefill_token_threshold")
            reqs = smoke_requests(has_chat_template(c.values.get("model.path")) is not False,
                                  threshold if isinstance(threshold, int) else None)
            targets.append(Target(c.name, c.url, self.model, tuple(reqs)))
        names = ", ".join(t.where for t in targets)
        self.console.say(f"kt-launch: smoke test (--smoke {self.opts.smoke}): {names}\n")
        self.smoke = SmokeRun(targets, self.opts.smoke_timeout, self.api_key)
        return True

    def _smoke_judged(self, restarted: _Child | None = None) -> bool:
        """Judge the finished smoke run; False when it failed under --smoke on: the fleet is being stopped, or, for
        the smoke test of the `restarted` replica, that replica (`_stop_replica`)."""
        from kt_launch.resolve.smoke import replies_json, smoke_findings, summary, too_short

        run, self.smoke = self.smoke, None
        fail = self.opts.smoke == "on"
        by_name = {c.name: c for c in self.replicas}
        if self.router is not None:
            by_name["the router"] = self.router
        bad, notes, lines, failed = [], [], [], []
        for target, replies in run.results:
            child = by_name.get(target.where)
            tail = list(child.tail) if child is not None and child is not self.router else None
            found = smoke_findings(replies, f"{target.where} ({target.base})", tail, fail)
            short = too_short(replies)
            bad += found
            notes += short
            if not found:
                lines.append(f"{target.where}: {summary(replies)}")
            elif child is not None:
                failed.append(child)
            if self.console.json and child is not None:
                rows = replies_json(replies)
                child.smoke = (rows, found + short)
                if found:
                    role = "router" if child is self.router else "replica"
                    self.console.event(smoke_failed_event(role, child.name, child.url, self.opts.smoke, rows, found,
                                                          list(child.tail), stopping=fail))
        if bad or notes:
            self.console.say(findings_text(scrub_findings(bad + notes, self.console.secrets)))
        for child in failed:
            self._tail(child)
        if restarted is None:  # the fleet's ready message shows them
            self.smoke_note += "".join(f"\n  smoke test: {line}" for line in lines)
        else:
            self.console.say("".join(f"kt-launch: smoke test: {line}\n" for line in lines))
        if not bad:
            return True
        if not fail:
            self.console.say("kt-launch: warning: the smoke test failed (--smoke warn); the fleet keeps serving\n")
            self.smoke_note += "\n  smoke test: FAILED (see above)"
            return True
        if restarted is not None:
            self._stop_replica(restarted)
            return False
        self.console.say("kt-launch: error: the smoke test failed (--smoke on): stopping the fleet; exit code "
                         f"{EXIT_SMOKE}\n")
        self._stop("smoke test failed", EXIT_SMOKE, "smoke_failed", self._died_answering(run.results, by_name))
        return False

    def _stop_replica(self, c: _Child) -> None:
        """A restarted replica failed its smoke test under --smoke on: it answers the router's requests wrongly, so
        it is stopped (its whole group: SIGTERM, then SIGKILL after the grace period) and not restarted; its death
        is reported by `_check_deaths`."""
        c.smoke_failed = True
        self.console.say(f"kt-launch: error: the smoke test of {c.name}, restarted, failed (--smoke on): stopping "
                         "it; it is not restarted again\n")
        _killpg(c.pgid, signal.SIGTERM)
        pgid, end = c.pgid, time.monotonic() + self.state.grace
        self._until(end, lambda: c.proc.returncode is not None)
        if pgid is not None and _group_alive(pgid):
            _killpg(pgid, signal.SIGKILL)

    def _died_answering(self, results, by_name: dict[str, _Child]) -> _Child | None:
        """The replica whose last smoke request got no answer because it exited (a crash on the second request):
        the exit event names it with its status, whether the cut-off reply or the exit reached the loop first."""
        for target, replies in results:
            c = by_name.get(target.where)
            if c is None or c.proc is None or not replies or replies[-1].status is not None:
                continue
            self._until(time.monotonic() + 2.0, lambda c=c: c.proc.returncode is not None)  # the exit follows
            if c.proc.returncode is not None:
                return c
        return None

    def _poll(self, c: _Child, now: float, start: float, api_key: str | None) -> bool:
        """Drive c's /health polls; True when it has just become ready."""
        if c.ready or not c.running():
            return False
        if c.probe is not None and c.probe.done:
            status, c.probe = c.probe.status, None
            if status == 200:
                c.ready = True
                c.tracker.stop()  # from here on its log is only passed on
                return True
            c.next_poll = now + self.opts.poll_interval
        if c.probe is None and now >= c.next_poll:
            end = now + PROBE_TIMEOUT
            if self.opts.ready_timeout:
                end = min(end, start + self.opts.ready_timeout)
            c.probe = self.loop.probe(f"{c.url}/health", end, api_key)
        return False

    def _check_deaths(self, phase: str) -> None:
        for c in self._children():
            if c.proc is None or c.reported or c.proc.returncode is None:
                continue
            c.reported = True
            rc = c.proc.returncode
            code = (128 - rc if rc < 0 else rc) or EXIT_FAILED  # a death that stops the fleet is never exit 0
            how = death_text(rc)
            if c is self.router:
                self.console.say(f"kt-launch: error: the router {how}; stopping the fleet\n")
                self._tail(c)
                self._stop("the router died", code, "died" if phase == "serving" else "died_before_ready", c)
            elif phase != "serving" and self._restart_later(c, how + " before the fleet was ready", phase):
                continue
            elif phase != "serving":
                self.console.say(f"kt-launch: error: replica {c.name} ({c.url}) {how} before the fleet was ready; "
                                 "stopping the fleet\n")
                self._tail(c)
                self._stop(f"{c.name} died", code, "died_before_ready", c)
            elif not c.smoke_failed and self._restart_later(c, how, phase):
                continue
            else:
                alive = [r.name for r in self.replicas if r.running() or r.restart_at is not None]
                if c.smoke_failed:
                    how = "was stopped after its failed smoke test"
                self.console.say(f"kt-launch: {'error: ' if is_failure(rc, c.ready) else ''}replica {c.name} ({c.url}) {how}; "
                                 + (f"{len(alive)} of {len(self.replicas)} replicas still serving through the "
                                    f"router ({', '.join(alive)})\n" if alive else "no replica is left\n"))
                self._tail(c)
                if self.fail_fast:
                    self._stop(f"{c.name} died (--fail-fast)", code, "died", c)
                elif not alive and c.smoke_failed:
                    self._stop("every replica died", EXIT_SMOKE, "smoke_failed", c)
                elif not alive:
                    self._stop("every replica died", code, "died", c)

    def _restart_later(self, c: _Child, how: str, phase: str) -> bool:
        """Schedule a restart of the dead replica c if --restart allows one (supervise.is_failure, the rule one
        instance follows too; not a crash its signature calls deterministic); say so either way."""
        if c.restarts is None or self.fail_fast or not self.opts.restart or not is_failure(c.proc.returncode,
                                                                                            c.ready):
            return False
        diag = self._crash(c)[1]
        if diag.deterministic:
            self.console.say(deterministic_text(f"replica {c.name}", diag))
            return False
        now = time.monotonic()
        delay = c.restarts.delay(now)
        if delay is None:
            self.console.say(f"kt-launch: error: {c.restarts.gave_up(f'replica {c.name}')}\n")
            return False
        n = c.restarts.record(now)
        others = "; the router keeps serving from the others" if phase == "serving" else ""
        self.console.say(f"kt-launch: error: replica {c.name} ({c.url}) {how}; restarting it in {delay:g}s (restart "
                         f"{n} of at most {self.opts.max_restarts} within {self.opts.restart_window / 60:g} min)"
                         f"{others}\n")
        self._tail(c)
        _killpg(c.pgid, signal.SIGKILL)  # what its leader left in its group (GPU memory, ports)
        c.ready, c.restart_at = False, now + delay
        return True

    def _restart_due(self, now: float) -> None:
        for c in self.replicas:
            if c.restart_at is not None and now >= c.restart_at and self.state.stop_at is None:
                c.restart_at = None
                busy = port_problem(*c.listen) if c.listen is not None else None
                if busy:  # another process took it while the replica was down: /health would be its
                    self.console.say(f"kt-launch: error: {c.name}: {busy}; not restarting it\n")
                    if not any(r.running() or r.restart_at is not None for r in self.replicas):
                        self._stop("every replica died", EXIT_PORT_BUSY, "refused", c)
                    continue
                c.reset()
                if not self._start(c):
                    self._stop(f"{c.name} could not be restarted", EXIT_CANNOT_START, "cannot_start", c)

    def _tail(self, c: _Child) -> None:
        lines = list(c.tail)[-15:]
        if lines:
            self.console.say(f"kt-launch: the last {len(lines)} lines of {c.name}:\n"
                             + "".join(f"  | {line}\n" for line in lines))
        if c is not self.router:
            text = self._crash(c)[0]
            if text:
                self.console.say(text)

    def _crash(self, c: _Child):
        return crash_report([*c.tracker.kept, *c.tail], c.values, c.proc.returncode, self.console.secrets,
                            c.cmd.argv)

    def _announce(self, url: str | None, elapsed: float) -> None:
        if url is None:  # one host's part of a fleet: its router runs elsewhere
            urls = " ".join(c.url for c in self.replicas)
            self.console.say(f"kt-launch: {len(self.replicas)} instance(s) ready after {elapsed:.1f}s: {urls}"
                             f"{self.smoke_note}\n"
                             "  (the fleet's router, on the machine that planned it, sends requests here)\n")
            return
        curl = curl_example(url, self.model, self.adapter, self.api_key is not None)
        lines = [f"kt-launch: the fleet is ready after {elapsed:.1f}s: {len(self.replicas)} local instance(s) behind "
                 "the router" + self.smoke_note,
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
        self._until(end, lambda: not any(c.running() for c in everything))
        self._until(end, lambda: not any(c.pgid is not None and _group_alive(c.pgid) for c in everything))
        self._until(time.monotonic() + 2.0, lambda: not self.loop.reading)  # what is left in the pipes
        for c in everything:
            if not c.reported and c.proc.returncode is not None:
                rc = c.proc.returncode
                if rc not in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL) and not st.signals:
                    self.console.say(f"kt-launch: {c.name} exited with code {rc} while stopping\n")

    def _until(self, end: float, done) -> None:
        while not done() and time.monotonic() < end:
            self._turn(min(end, time.monotonic() + 0.05))

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
            self._turn(min(deadline, st.stop_at or deadline, time.monotonic() + 0.05))


def _refusals(out, children: list[_Child]) -> list[str]:
    """What the plan knows that stops the fleet before anything starts."""
    why = []
    if out.plan.router is not None and not getattr(out, "router_available", True):
        why.append(f"fleet.router.python {out.plan.router.python} has no sglang-router, so the router cannot start "
                   f"(KT-W710); install it there ({router_install_line(out.plan.router.python)}) or point "
                   "fleet.router.python at an interpreter that has it")
    for c in children:
        if c.listen is not None:
            busy = port_problem(*c.listen)
            if busy:
                why.append(f"{c.name}: {busy}")
    return why


def launch_fleet(out, args) -> int:
    """cli entry: `out` is app.FleetOutcome, `args` the parsed launch arguments."""
    from kt_launch.core.profile import lora_entries

    fp = out.plan
    opts = options_of(args)
    restart_options(opts, args, out.config.fleet.restart if out.config.fleet is not None else "no")
    smoke_options(opts, args, out.config.server.smoke)
    opts.json = bool(getattr(args, "json", False))
    secrets: set[str] = set()
    children = []
    for inst, cmd in zip(fp.instances, out.commands):
        secrets |= secret_values(cmd.argv, cmd.env)
        if fp.router is None or inst.replica.local:  # this machine's part (--fleet-host plans only that)
            r = inst.replica
            children.append(_Child(r.name, cmd, r.url, (r.listen, r.port), r,
                                   values={k: v.value for k, v in inst.plan.values.items()}))
    router = None
    if fp.router is not None:
        rc = router_command(fp.router)
        secrets |= secret_values(rc.argv, rc.env)
        router = _Child("router", rc, router_url(fp.router), (fp.router.host, fp.router.port))
    secrets |= env_secret_values(os.environ)
    console = Console(secrets, json=opts.json)
    try:
        return _launch(out, args, fp, children, router, opts, console, lora_entries(out.config))
    finally:
        console.drain()


def _launch(out, args, fp, children, router, opts, console, entries) -> int:
    shown = [f for f in fp.findings if f.level != "info"]
    for inst, cmd in zip(fp.instances, out.commands):
        shown += [f for f in instance_findings(inst, cmd) if f.level != "info" and f not in shown]
    if shown:
        console.say(findings_text(scrub_findings(shown, console.secrets)))
    refused = _refusals(out, children + ([router] if router is not None else []))
    if refused:
        console.say("".join(f"kt-launch: error: {why}\n" for why in refused) + "kt-launch: nothing was started\n")
        console.event(exit_event(EXIT_PORT_BUSY, "refused"))
        return EXIT_PORT_BUSY
    for h in fp.hosts:
        console.say(f"kt-launch: host {h.name} runs its own part; run there: {shlex.join(redact_argv(list(h.argv)))}\n"
                    f"  (the router sends to {' '.join(h.urls) or 'none'})\n")
    if not children:
        console.say("kt-launch: no instance runs on this machine; starting the router only\n")
    _place(out, fp, children, console)
    first = fp.instances[0].plan if fp.instances else None
    model = (first.get("model.served_name") or first.get("model.path") or "default") if first else "default"
    adapter = (entries[0][0] or entries[0][1]) if entries else None
    api_key = out.config.server.api_key
    sup = FleetSupervisor(children, router, opts, bool(getattr(args, "fail_fast", False)), model, adapter, api_key,
                          console)
    return sup.run()


def _place(out, fp, children: list[_Child], console: Console) -> None:
    """Each local replica on its NUMA node: the CPUs it gets and whether its memory is bound (printed)."""
    facts = getattr(out, "local_host", None)
    if facts is None or not children:
        return
    found, notes = placements([c.replica for c in children], facts)
    for c, p in zip(children, found):
        c.placement = p
        cpus = _ranges(sorted(p.cpus)) if p.cpus else "not pinned"
        mem = f"memory bound to node(s) {','.join(map(str, p.membind))}" if p.membind else "memory not bound"
        console.say(f"kt-launch: {c.name} runs on CPUs {cpus}, {mem}\n")
        for note in p.notes:
            console.say(f"kt-launch: warning: {note}\n")
    for note in notes:
        console.say(f"kt-launch: warning: {note}\n")


def _ranges(cpus: list[int]) -> str:
    parts, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)
