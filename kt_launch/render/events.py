"""`--supervise --json`: the supervisor's machine-readable events (pure), one JSON object per line on stdout.

Every event carries `schema_version` (core/output.py) and `event`; docs/JSON.md ("`kt-launch --supervise --json`")
documents them and schema/supervise-events.schema.json is their JSON Schema (tests validate emitted events
against it). The supervisors (run/supervise.py, run/fleet_supervise.py) decide when an event happens; this module
only shapes it. Smoke rows come from resolve/smoke.replies_json; findings are core Findings.

Events:
- `ready`: a server answers /health and passed its smoke test (or --smoke warn / off): `role` server (one
  instance), replica (each fleet replica, named), router, fleet (after the router's, or a --fleet-host part).
- `smoke_failed`: a smoke test failed: the error findings (warnings under --smoke warn) with their fields, the
  log tail, and whether the server is being stopped (--smoke on).
- `exit`: the last event: kt-launch's exit code and `reason` (one of EXIT_REASONS).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from kt_launch.core.findings import Finding
from kt_launch.core.output import SCHEMA_VERSION
from kt_launch.render.redact import scrub

EVENTS = ("ready", "smoke_failed", "exit")
ROLES = ("server", "replica", "router", "fleet")
# why kt-launch exited: decide by these, never by the text on stderr
EXIT_REASONS = (
    "plan_errors",        # 3: the plan has errors; nothing was started
    "refused",            # 3: known before the start: a taken port, a router interpreter without sglang-router
    "cannot_start",       # 2: a process could not be started (runtime.python, fleet.router.python)
    "signal",             # 128+N: kt-launch was stopped by signal N (`signal`)
    "ready_timeout",      # 124: not ready within --ready-timeout
    "smoke_failed",       # 4: --smoke on and a smoke request failed; the server (fleet) was stopped
    "died_before_ready",  # the server (a replica: `name`) died before it (the fleet) was ready
    "died",               # the server, the router or the last replica died while serving (`name`)
    "exited",             # 0: the server was up and exited on its own with code 0
)


def smoke_block(mode: str, rows: list[dict] | None, findings: Iterable[Finding] = ()) -> dict | None:
    """A ready event's `smoke`: None when no smoke test ran (--smoke off, a restarted replica)."""
    if rows is None:
        return None
    return {"mode": mode, "ok": bool(rows) and all(r["ok"] for r in rows), "requests": rows,
            "findings": [f.to_json() for f in findings]}


def ready_event(role: str, url: str | None, model: str, after_s: float, smoke: dict | None, *,
                name: str | None = None, restarted: bool = False, replicas: list[dict] | None = None) -> dict:
    """`url`: the base URL (http://HOST:PORT; None for a --fleet-host part, whose router runs elsewhere);
    `replicas`: the fleet's event only ({name, url} of each local replica)."""
    doc = {"schema_version": SCHEMA_VERSION, "event": "ready", "role": role, "name": name, "url": url,
           "openai_base_url": f"{url}/v1" if url else None, "model": model, "after_s": round(after_s, 3),
           "smoke": smoke, "restarted": restarted}
    if role == "fleet":
        doc["replicas"] = replicas or []
    return doc


def smoke_failed_event(role: str, name: str | None, url: str, mode: str, rows: list[dict], findings: list[Finding],
                       tail: list[str], stopping: bool) -> dict:
    return {"schema_version": SCHEMA_VERSION, "event": "smoke_failed", "role": role, "name": name, "url": url,
            "mode": mode, "stopping": stopping, "requests": rows, "findings": [f.to_json() for f in findings],
            "log_tail": [line[:2000] for line in tail[-40:]]}  # a log line may be a megabyte


def exit_event(code: int, reason: str, *, name: str | None = None, returncode: int | None = None,
               signal: str | None = None, findings: Iterable[Finding] = ()) -> dict:
    """`returncode`: the process that decided the exit (`name`; None: the one server), as the OS reported it
    (negative: killed by that signal); `signal`: the signal that stopped kt-launch."""
    assert reason in EXIT_REASONS, reason
    return {"schema_version": SCHEMA_VERSION, "event": "exit", "code": code, "reason": reason, "name": name,
            "returncode": returncode, "signal": signal, "findings": [f.to_json() for f in findings]}


def _masked(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v, secrets) for v in value]
    return value


def event_line(event: dict, secrets: set[str]) -> str:
    """One line of JSON, every string with the secrets masked (before encoding: an escaped copy would slip
    through), ASCII only (no control character reaches a terminal)."""
    return json.dumps(_masked(event, secrets), ensure_ascii=True, allow_nan=False) + "\n"
