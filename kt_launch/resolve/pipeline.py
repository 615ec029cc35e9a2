"""resolve(): facts + user config -> LaunchPlan. Pure: same input, same plan; bad input becomes findings."""

from __future__ import annotations

from typing import Callable

from kt_launch.resolve.experts import resolve_gpu_experts, resolve_method, resolve_model_shape, resolve_weights
from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.resolve.flavor_rules import resolve_flavor_lora
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.lora import resolve_cuda_graph, resolve_lora
from kt_launch.resolve.memory import memory_plan
from kt_launch.core.plan import LaunchPlan, Resolved
from kt_launch.resolve.rules import ALL as CHECKS  # rule tables over the resolved values (flavour, preflight)
from kt_launch.resolve.server import resolve_runtime, resolve_server
from kt_launch.resolve.threads import resolve_threads
from kt_launch.resolve.values import is_user_set, user_value
from kt_launch.resolve.verdicts import no_kt_flags
from kt_launch.core.options import OPTIONS, PASS
from kt_launch.core.profile import setting

Step = Callable[[ResolveInput, dict, list], None]


def resolve_passthrough(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """Every settable key no step filled: the user's value (or the default) with its source. Derived keys are
    filled by the step the registry names; a user value a step chose not to record still reaches render."""
    for o in OPTIONS:
        if o.key in values or not o.settable:
            continue
        v = setting(inp.config, o.key)
        if v is None or (o.resolve != PASS and not is_user_set(inp.provenance, o.key, v)):
            continue
        if (v is False or v == [] or v == {}) and inp.provenance.of(o.key) is None:
            continue  # an off switch or empty list nobody set: nothing to show or pass
        values[o.key] = user_value(inp.provenance, o.key, list(v) if isinstance(v, (list, tuple)) else
                                   (dict(v) if isinstance(v, dict) else v))


# Steps fill in values, by the names the option registry uses in `derived(...)`; in this order: later steps
# read earlier values.
STEPS: dict[str, Step] = {
    "model_shape": resolve_model_shape, "method": resolve_method, "weights": resolve_weights,
    "threads": resolve_threads, "gpu_experts": resolve_gpu_experts, "lora": resolve_lora,
    "cuda_graph": resolve_cuda_graph, "flavor_lora": resolve_flavor_lora, "server": resolve_server,
    "runtime": resolve_runtime, "passthrough": resolve_passthrough,
}


def resolve_flavor(inp: ResolveInput, out: list[Finding]) -> tuple[Resolved, frozenset[str] | None]:
    """The flavour, and the flags the installed SGLang accepts when it was inspected and matches."""
    wanted = inp.config.runtime.flavor
    facts = inp.sglang
    detected = accepted = None
    if facts is not None and facts.ok:
        detected = facts.flavor
        if detected is None:
            out.append(no_kt_flags(facts))
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
    findings += [warning("KT-W103", w, "unset it, or correct the name") for w in inp.input_warnings]
    for step in STEPS.values():
        step(inp, values, findings)
    for check in CHECKS:
        findings.extend(check(inp, values))
    plan = LaunchPlan(flavor=flavor.value, values=values, findings=_dedupe(findings), passthrough=list(inp.passthrough),
                      accepted_flags=accepted, memory=memory_plan(inp, values))
    return plan


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    order = {"error": 0, "warning": 1, "info": 2}
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return sorted(out, key=lambda f: order[f.level])
