"""Dry-run output: the command (shlex text that round-trips), env, resolved values table, findings."""

from __future__ import annotations

import json
import shlex

from kt_launch.render.argv import Command
from kt_launch.render.memory import memory_text
from kt_launch.render.redact import redact_argv, redact_env, scrub, secret_values
from kt_launch.core.findings import Finding
from kt_launch.core.options import OPTIONS
from kt_launch.core.plan import LaunchPlan

_SECRET_KEYS = tuple(o.key for o in OPTIONS if o.secret)


def _resolved_json(plan: LaunchPlan, secrets: set[str]) -> dict:
    out = {}
    for key, r in plan.values.items():
        d = r.to_json()
        if key in _SECRET_KEYS and d["value"] is not None:
            d["value"] = "***"
        if key == "runtime.env" and isinstance(d["value"], dict):
            d["value"] = redact_env(d["value"])
        if key == "server.extra_args" and isinstance(d["value"], list):
            d["value"] = redact_argv([str(a) for a in d["value"]])
        d["reason"] = scrub(d["reason"], secrets)
        out[key] = d
    return out


def plan_json(plan: LaunchPlan, cmd: Command, findings: list[Finding]) -> str:
    secrets = secret_values(cmd.argv, cmd.env)
    doc = {
        "argv": redact_argv(cmd.argv),
        "env": redact_env(cmd.env),
        "flavor": plan.flavor,
        "resolved": _resolved_json(plan, secrets),
        "findings": [{**f.to_json(), "message": scrub(f.message, secrets), "fix": scrub(f.fix, secrets)}
                     for f in findings],
    }
    if plan.memory is not None:
        doc["memory"] = plan.memory.to_json()
    return json.dumps(doc, indent=2, default=_jsonable)


def _jsonable(o):
    """A nested profile section among the values (fleet.hosts' entries, fleet.router) as its mapping."""
    if hasattr(o, "model_dump"):
        return o.model_dump()
    raise TypeError(f"{type(o).__name__} is not JSON")


def findings_text(findings: list[Finding]) -> str:
    if not findings:
        return "findings: none\n"
    lines = ["findings:"]
    for f in findings:
        lines.append(f"  {f.level.upper():7} {f.code}  {f.message}")
        if f.fix:
            lines.append(f"          fix: {f.fix}")
    return "\n".join(lines) + "\n"


def plan_text(plan: LaunchPlan, cmd: Command, findings: list[Finding]) -> str:
    secrets = secret_values(cmd.argv, cmd.env)
    parts = [f"# kt-launch plan (flavour {plan.flavor})", "", "command:", "  " + shlex.join(redact_argv(cmd.argv)), ""]
    if cmd.env:
        parts.append("environment (added to the inherited one):")
        parts += [f"  {k}={shlex.quote(v)}" for k, v in sorted(redact_env(cmd.env).items())]
        parts.append("")
    parts.append("resolved values:")
    rows = [(k, _show(k, d["value"]), d["source"], d["reason"]) for k, d in _resolved_json(plan, secrets).items()]
    w0 = max(len(r[0]) for r in rows)
    w1 = min(40, max(len(r[1]) for r in rows))
    w2 = max(len(r[2]) for r in rows)
    for k, v, s, why in rows:
        parts.append(f"  {k:<{w0}}  {v:<{w1}}  {s:<{w2}}  {why}")
    parts.append("")
    mem = memory_text(plan.memory)
    if mem:
        parts += [scrub(mem, secrets)]
    return "\n".join(parts) + "\n" + scrub(findings_text(findings), secrets)


def _show(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_jsonable)
    return str(value)
