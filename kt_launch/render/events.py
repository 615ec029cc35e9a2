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
    """A ready event's `smoke`: None when no smoke test ran (--smoke off, the fleet's own event)."""
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


# ---------------------------------------------------------------------------------------------------------
# The events' JSON Schema (schema/supervise-events.schema.json is this, committed: `kt-launch schema --events`)
# ---------------------------------------------------------------------------------------------------------

def _nullable(t: str | dict) -> dict:
    return {"anyOf": [t if isinstance(t, dict) else {"type": t}, {"type": "null"}]}


_FINDING = {
    "type": "object",
    "required": ["level", "code", "message", "fix"],
    "properties": {
        "level": {"enum": ["error", "warning", "info"]},
        "code": {"type": "string", "pattern": "^KT-[EWI][0-9]{3}$"},
        "message": {"type": "string"},
        "fix": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "the named things it is about (smoke findings: request, url, log_tail)"},
    },
}

_REQUEST = {
    "type": "object",
    "description": "one smoke request, as `kt-launch smoke --json` rows (resolve/smoke.replies_json)",
    "required": ["request", "kind", "status", "ok", "problem", "prompt_tokens", "completion_tokens", "ttft_s",
                 "decode_tok_s", "seconds", "text"],
    "properties": {
        "request": {"type": "string", "description": "its name, as findings' `request` field names it"},
        "kind": {"enum": ["chat", "completion"]},
        "status": _nullable("integer") | {"description": "HTTP status; null: no answer"},
        "ok": {"type": "boolean"},
        "problem": _nullable("string") | {"description": "what was wrong; null when it passed"},
        "prompt_tokens": _nullable({"type": "integer", "minimum": 0}),
        "completion_tokens": _nullable({"type": "integer", "minimum": 0}),
        "ttft_s": _nullable({"type": "number", "minimum": 0}) | {"description": "time to first token, seconds"},
        "decode_tok_s": _nullable({"type": "number", "minimum": 0}) | {"description": "decode tokens per second"},
        "seconds": {"type": "number", "minimum": 0},
        "text": {"type": "string", "maxLength": 400},
    },
}

_SMOKE = {
    "type": "object",
    "required": ["mode", "ok", "requests", "findings"],
    "properties": {
        "mode": {"enum": ["warn", "on"], "description": "--smoke (off runs no smoke test: `smoke` is null)"},
        "ok": {"type": "boolean", "description": "every request passed (false only under --smoke warn)"},
        "requests": {"type": "array", "items": {"$ref": "#/$defs/smoke_request"}},
        "findings": {"type": "array", "items": {"$ref": "#/$defs/finding"},
                     "description": "KT-W560..W562 under --smoke warn, KT-W563"},
    },
}


def _event(name: str, description: str, props: dict, required: list[str]) -> dict:
    return {"type": "object", "description": description,
            "required": ["schema_version", "event", *required],
            "properties": {"schema_version": {"const": SCHEMA_VERSION}, "event": {"const": name}, **props}}


def events_schema() -> dict:
    """The JSON Schema of one event line of `--supervise --json` (docs/JSON.md)."""
    url = _nullable({"type": "string", "pattern": "^https?://"})
    ready = _event("ready", "a server answers /health and its smoke test passed (or --smoke warn/off); a fleet: "
                   "each replica, then the router, then the fleet", {
                       "role": {"enum": list(ROLES)},
                       "name": _nullable("string") | {"description": "the replica's name, `router`; null for one "
                                                                     "instance and the fleet"},
                       "url": url | {"description": "base URL (http://HOST:PORT); null: a --fleet-host part's fleet "
                                                    "(its router runs elsewhere)"},
                       "openai_base_url": url,
                       "model": {"type": "string", "description": "the served model name requests ask for"},
                       "after_s": {"type": "number", "minimum": 0, "description": "seconds since the start"},
                       "smoke": _nullable({"$ref": "#/$defs/smoke"}) | {
                           "description": "null: no smoke test (--smoke off, the fleet's own "
                                          "event)"},
                       "restarted": {"type": "boolean", "description": "ready again after --restart on-failure"},
                       "replicas": {"type": "array", "description": "the fleet's event: its local replicas",
                                    "items": {"type": "object", "required": ["name", "url"],
                                              "properties": {"name": {"type": "string"}, "url": {"type": "string"}}}},
                   }, ["role", "name", "url", "openai_base_url", "model", "after_s", "smoke", "restarted"])
    failed = _event("smoke_failed", "a smoke test failed: its findings (KT-E560..E562, or the W twins under --smoke "
                    "warn) and the server's log tail", {
                        "role": {"enum": ["server", "replica", "router"]},
                        "name": _nullable("string"),
                        "url": {"type": "string", "pattern": "^https?://"},
                        "mode": {"enum": ["warn", "on"]},
                        "stopping": {"type": "boolean", "description": "--smoke on: the server (fleet) is stopped "
                                                                       "and kt-launch exits with 4"},
                        "requests": {"type": "array", "items": {"$ref": "#/$defs/smoke_request"}},
                        "findings": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/finding"}},
                        "log_tail": {"type": "array", "items": {"type": "string", "maxLength": 2000},
                                     "description": "the server's last lines (empty for the router)"},
                    }, ["role", "name", "url", "mode", "stopping", "requests", "findings", "log_tail"])
    end = _event("exit", "the last event: kt-launch's exit code and why", {
        "code": {"type": "integer", "minimum": 0, "maximum": 255},
        "reason": {"enum": list(EXIT_REASONS)},
        "name": _nullable("string") | {"description": "the fleet process that decided it (a replica, `router`)"},
        "returncode": _nullable("integer") | {"description": "that process's (the server's) own exit status; "
                                                             "negative: killed by that signal"},
        "signal": _nullable("string") | {"description": "reason signal: the signal that stopped kt-launch"},
        "findings": {"type": "array", "items": {"$ref": "#/$defs/finding"},
                     "description": "plan_errors: the plan's errors; died, died_before_ready: what a known crash "
                                    "signature means (KT-E540..E550)"},
    }, ["code", "reason", "name", "returncode", "signal", "findings"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kt-launch --supervise --json: one event (one line of stdout)",
        "description": "docs/JSON.md. Generated by `kt-launch schema --events` from kt_launch/render/events.py. "
                       "New fields may appear without a schema_version bump: ignore fields you do not know.",
        "$defs": {"finding": _FINDING, "smoke_request": _REQUEST, "smoke": _SMOKE, "ready": ready,
                  "smoke_failed": failed, "exit": end},
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in EVENTS],
    }


def events_schema_text() -> str:
    return json.dumps(events_schema(), indent=2) + "\n"
