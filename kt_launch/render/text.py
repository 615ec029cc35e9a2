"""Dry-run and check output: the verdict, the command (shlex text that round-trips, one line to copy), findings,
env, the resolved values table, memory. Prose wraps to the width the CLI measured; the command never does."""

from __future__ import annotations

import json
import shlex
import textwrap

from kt_launch.render.argv import Command
from kt_launch.render.memory import memory_text
from kt_launch.render.redact import MASK, redact_argv, redact_env, scrub, scrub_findings, secret_values
from kt_launch.core.findings import Finding
from kt_launch.core.options import OPTIONS
from kt_launch.core.output import DEFAULT_WIDTH, SCHEMA_VERSION, verdict
from kt_launch.core.plan import LaunchPlan
from kt_launch.core.placement import PlacementPlan

_SECRET_KEYS = tuple(o.key for o in OPTIONS if o.secret)


def _resolved_json(plan: LaunchPlan, secrets: set[str]) -> dict:
    out = {}
    for key, r in plan.values.items():
        d = r.to_json()
        if key in _SECRET_KEYS and d["value"] is not None:
            d["value"] = MASK
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
        "schema_version": SCHEMA_VERSION,
        "verdict": verdict(findings),
        "ok": not any(f.level == "error" for f in findings),
        "argv": redact_argv(cmd.argv),
        "env": redact_env(cmd.env),
        "flavor": plan.flavor,
        "resolved": _resolved_json(plan, secrets),
        "findings": [f.to_json() for f in scrub_findings(findings, secrets)],
    }
    if plan.memory is not None:
        doc["memory"] = plan.memory.to_json()
    if plan.placement is not None:
        doc["placement"] = plan.placement.to_json()
    return json.dumps(doc, indent=2, default=_jsonable)


def _jsonable(o):
    """A nested profile section among the values (fleet.hosts' entries, fleet.router) as its mapping."""
    if hasattr(o, "model_dump"):
        return o.model_dump()
    raise TypeError(f"{type(o).__name__} is not JSON")


def num(v, fmt: str = ".1f") -> str:
    """A figure of a table row, or "-" when it is not known (None)."""
    return "-" if v is None else format(v, fmt)


def wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """Lines of `text` at most `width` wide (a word longer than that, a path say, stays whole)."""
    return textwrap.wrap(text, width=max(width, len(first) + 20), initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


def findings_text(findings: list[Finding], width: int = DEFAULT_WIDTH) -> str:
    if not findings:
        return "findings: none\n"
    lines = ["findings:"]
    for f in findings:
        lines += wrap(f.message, width, f"  {f.level.upper():7} {f.code}  ", " " * 10)
        if f.fix:
            lines += wrap(f.fix, width, " " * 10 + "fix: ", " " * 15)
    return "\n".join(lines) + "\n"


def value_rows(rows: list[tuple[str, str, str, str]], indent: str, width: int = DEFAULT_WIDTH) -> list[str]:
    """key, value, source columns, then the reason wrapped under itself (or below the row when narrow)."""
    if not rows:
        return []
    w0 = max(len(r[0]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    w1 = min(40, max(len(r[1]) for r in rows), max(12, width - len(indent) - w0 - w2 - 40))  # room for reasons
    out = []
    for k, v, s, why in rows:
        head = f"{indent}{k:<{w0}}  {v:<{w1}}  {s:<{w2}}  "
        if len(head) + 30 > width:
            out.append(head.rstrip())
            out += wrap(why, width, indent + "    ", indent + "    ") if why else []
        else:
            out += wrap(why, width, head, " " * len(head))
    return out


def plan_text(plan: LaunchPlan, cmd: Command, findings: list[Finding], width: int = DEFAULT_WIDTH) -> str:
    secrets = secret_values(cmd.argv, cmd.env)
    parts = [verdict(findings), "command:", "  " + shlex.join(redact_argv(cmd.argv)), ""]
    parts += findings_text(scrub_findings(findings, secrets), width).rstrip("\n").split("\n") + [""]
    if cmd.env:
        parts.append("environment (added to the inherited one):")
        parts += [f"  {k}={shlex.quote(v)}" for k, v in sorted(redact_env(cmd.env).items())]
        parts.append("")
    parts.append(f"resolved values (flavour {plan.flavor}):")
    rows = [(k, _show(k, d["value"]), d["source"], d["reason"]) for k, d in _resolved_json(plan, secrets).items()]
    parts += value_rows(rows, "  ", width)
    mem = memory_text(plan.memory)
    if mem:
        parts += ["", scrub(mem, secrets).rstrip("\n")]
    if plan.placement is not None:
        parts += [""] + placement_lines(plan.placement, width)
    return "\n".join(parts) + "\n"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def placement_lines(p: PlacementPlan, width: int = DEFAULT_WIDTH) -> list[str]:
    """The placement table: GPU experts per MoE layer (runs of equal counts folded), and the share of the recorded
    routed tokens the GPU experts serve, against uniform at the same total."""
    lines = [f"expert placement: {p.strategy}, {p.budget} GPU experts over {len(p.moe_layers)} MoE layers"
             + (f" (stats {p.stats})" if p.stats else "")]
    if p.per_layer is not None:
        runs: list[tuple[int, int, int]] = []  # first layer, last layer, count
        for layer, n in zip(p.moe_layers, p.per_layer):
            if runs and runs[-1][2] == n and runs[-1][1] + 1 == layer:
                runs[-1] = (runs[-1][0], layer, n)
            else:
                runs.append((layer, layer, n))
        text = ", ".join(f"{a}: {n}" if a == b else f"{a}-{b}: {n}" for a, b, n in runs)
        lines += wrap(text, width, "  GPU experts per layer  ", " " * 25)
        lines.append(f"  min {min(p.per_layer)}, max {max(p.per_layer)} per layer")
    if p.served is not None or p.uniform_served is not None:
        lines.append(f"  recorded routed tokens served on the GPU: {_share(p.served)}"
                     + (f" (uniform at the same total: {_share(p.uniform_served)})" if p.strategy != "uniform" else ""))
    if p.note:
        lines += wrap(p.note, width, "  ", "  ")
    return lines


def check_text(cmd: Command, findings: list[Finding], width: int = DEFAULT_WIDTH,
               placement: PlacementPlan | None = None) -> str:
    """`kt-launch check`: the verdict, the command it checked, the findings (no values table), the placement."""
    secrets = secret_values(cmd.argv, cmd.env)
    extra = "" if placement is None else "\n" + scrub("\n".join(placement_lines(placement, width)), secrets) + "\n"
    return (f"{verdict(findings)}\ncommand:\n  {shlex.join(redact_argv(cmd.argv))}\n\n"
            + findings_text(scrub_findings(findings, secrets), width) + extra)


def _show(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_jsonable)
    return str(value)
