"""resolve(): facts + user config -> LaunchPlan. Pure: same input, same plan; bad input becomes findings."""

from __future__ import annotations

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.memory import memory_plan
from kt_launch.resolve.preflight_weights import check_memory
from kt_launch.core.plan import LaunchPlan, Resolved
from kt_launch.resolve.rules import ALL as CHECKS  # rule tables over the resolved values (flavour, preflight)
from kt_launch.resolve.values import is_user_set, user_value
from kt_launch.resolve.verdicts import no_kt_flags
from kt_launch.core.options import OPTIONS, PASS
from kt_launch.resolve.steps import Step, StepGraphError, declared, ordered, take_step_values
from kt_launch.core.profile import setting
# the modules whose @step declarations make up the graph
from kt_launch.resolve import experts, flavor_rules, lora, placement, server, threads  # noqa: F401


def resolve_passthrough(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """Every settable key no step filled: the user's value (or the default) with its source. Derived keys are
    filled by the step that declares them; a user value a step chose not to record still reaches render.
    Runs after every step (it is no step: it fills whatever is left)."""
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


# Importing the step modules above registers their @step declarations; the order follows from what each reads.
STEPS: tuple[Step, ...] = ordered(declared(), OPTIONS)


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
    for step in STEPS:
        before = set(values)
        step(inp, values, findings)
        stray = set(values) - before - set(step.fills)
        if stray:  # a step may only fill what it declares: the graph, the schema and the docs rely on it
            raise StepGraphError(f"step {step.name} filled {sorted(stray)} without declaring them")
    computed = take_step_values(values)
    resolve_passthrough(inp, values, findings)
    # the memory_setup step's set-up, with what later steps derived; the RAM check reads the plan
    memory = memory_plan(inp, values, computed["memory.setup"]) if computed.get("memory.setup") else None
    for check in CHECKS:
        findings.extend(check(inp, values))
    findings.extend(check_memory(inp, memory))
    return LaunchPlan(flavor=flavor.value, values=values, findings=_dedupe(findings), passthrough=list(inp.passthrough),
                      accepted_flags=accepted, memory=memory, parser=inp.sglang if accepted is not None else None,
                      sglang_config=inp.sglang_config, placement=computed.get("placement.plan"))


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    order = {"error": 0, "warning": 1, "info": 2}
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return sorted(out, key=lambda f: order[f.level])
