"""resolve(): facts + user config -> LaunchPlan. Pure: same input, same plan; bad input becomes findings."""

from __future__ import annotations

from typing import Callable

from kt_launch.resolve.experts import resolve_gpu_experts, resolve_method, resolve_model_shape, resolve_weights
from kt_launch.resolve.findings import Finding, error, info, warning
from kt_launch.resolve.flavor_rules import resolve_flavor_lora
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.lora import resolve_cuda_graph, resolve_lora
from kt_launch.resolve.plan import LaunchPlan, Resolved
from kt_launch.resolve.rules import ALL as CHECKS  # rule tables over the resolved values (flavour, preflight)
from kt_launch.resolve.server import resolve_runtime, resolve_server
from kt_launch.resolve.threads import resolve_threads
from kt_launch.resolve.values import user_value

Step = Callable[[ResolveInput, dict, list], None]

# Steps fill in values (in this order: later steps read earlier values).
STEPS: tuple[Step, ...] = (
    resolve_model_shape, resolve_method, resolve_weights, resolve_threads, resolve_gpu_experts,
    resolve_lora, resolve_cuda_graph, resolve_flavor_lora, resolve_server, resolve_runtime,
)


def resolve_flavor(inp: ResolveInput, out: list[Finding]) -> tuple[Resolved, frozenset[str] | None]:
    """The flavour, and the flags the installed SGLang accepts when it was inspected and matches."""
    wanted = inp.config.runtime.flavor
    facts = inp.sglang
    detected = accepted = None
    if facts is not None and facts.ok:
        detected = facts.flavor
        if detected is None:
            out.append(error("KT-E307", f"the SGLang in {facts.python} ({facts.describe()}) has no kt-kernel flags",
                             "install sglang-kt (pip install sglang-kt) or point runtime.python at an interpreter that has it"))
        else:
            accepted = facts.flags
        for w in facts.warnings:
            out.append(info("KT-I302", f"SGLang inspection: {w}"))
    if wanted != "auto":
        chosen = user_value(inp.provenance, "runtime.flavor", wanted)
        if detected is not None and detected != wanted:
            out.append(error("KT-E305", f"runtime.flavor={wanted} but {facts.python} has {facts.describe()}, which is "
                             f"the {detected} flavour", f"set runtime.flavor: {detected} (or auto), or change runtime.python"))
            accepted = None
        elif facts is not None and not facts.ok:
            out.append(warning("KT-W301", f"runtime.python cannot run SGLang: {facts.error}",
                               "install SGLang into runtime.python, or plan with --no-check on a machine without it"))
        return chosen, accepted
    if detected is not None:
        return Resolved(detected, "host", f"detected from the installed SGLang ({facts.describe()})"), accepted
    why = facts.error if facts is not None and not facts.ok else "no installed SGLang was inspected"
    out.append(info("KT-I301", f"runtime.flavor is auto and {why}; planning for sglang-kt",
                    "set runtime.flavor, or install sglang-kt into runtime.python"))
    return Resolved("sglang-kt", "default", "auto without an inspected SGLang"), None


def resolve(inp: ResolveInput) -> LaunchPlan:
    findings: list[Finding] = []
    values: dict[str, Resolved] = {}
    flavor, accepted = resolve_flavor(inp, findings)
    values["runtime.flavor"] = flavor
    for step in STEPS:
        step(inp, values, findings)
    for check in CHECKS:
        findings.extend(check(inp, values))
    plan = LaunchPlan(flavor=flavor.value, values=values, findings=_dedupe(findings), passthrough=list(inp.passthrough),
                      accepted_flags=accepted)
    return plan


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    order = {"error": 0, "warning": 1, "info": 2}
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return sorted(out, key=lambda f: order[f.level])
