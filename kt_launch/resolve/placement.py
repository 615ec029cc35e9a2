"""Expert placement: kt.expert_placement (auto resolved) and kt.expert_stats (a path or a calibrated workload), the
stats file's check as findings, and the plan's per-layer GPU experts (core/placement.py PlacementPlan).

sglang-kt 0.7.2 (kt_ep_wrapper.py:4619-4716): `frequency` without a `.pt` warns and silently falls back to uniform,
a `.pt` of the wrong shape is a ValueError at model load (minutes into the start), and only a name ending in `.pt`
is read at all (L4627). kt-launch refuses all three before the start.

The memory plan is unchanged by a non-uniform mask: sglang-kt sizes the GPU experts by their total
(--kt-num-gpu-experts x MoE layers, kt_ep_wrapper.py:4606-4612), which every strategy keeps, and the layerwise-prefill
layer holds a whole layer's experts whatever the mask (resolve/memory.py layerwise_bytes). One exception is named
(KT-W583): where sglang-kt counts MoE layers that hold no experts (Llama-4, ERNIE: resolve/memory.py loaded_share),
uniform spreads part of the total over layers that load nothing, while frequency puts all of it on real ones.
"""

from __future__ import annotations

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.placement import (ALL_ZERO, NEGATIVE, NOT_NUMBER, SHAPE, PlacementPlan, StatsFacts,
                                      is_workload_name)
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.steps import step
from kt_launch.resolve.values import user_value

_CALIBRATE = "record one with `kt-launch calibrate --profile PROFILE [--name WORKLOAD]`"


@step(fills=("kt.expert_placement", "kt.expert_stats", "placement.plan"),
      reads=("config", "model", "stats", "kt.num_gpu_experts", "kt.gpu_experts_ratio"))
def resolve_placement(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """kt.expert_placement (auto: frequency with this model's calibration or kt.expert_stats, else uniform),
    kt.expert_stats as the file sglang-kt reads (frequency only), and the per-layer GPU experts of the plan."""
    cfg, prov = inp.config, inp.provenance
    chosen, stats_key = cfg.kt.expert_placement, cfg.kt.expert_stats
    facts: StatsFacts | None = inp.stats
    if chosen is None and stats_key is None:
        return
    if facts is None and stats_key is not None and not is_workload_name(stats_key):  # no facts gathered: as given
        facts = StatsFacts(path=stats_key, source="profile", unchecked="not checked under --no-check",
                           skipped=True)
    has_file = facts is not None and facts.path is not None
    if stats_key is not None and facts is not None and facts.missing and chosen in ("auto", "frequency"):
        out.append(error("KT-E584", f"kt.expert_stats: {facts.missing}", _CALIBRATE + ", or give a .pt path",
                         {"key": "kt.expert_stats"}))
    if chosen == "auto":  # the user's choice, resolved: its source stays the user's (a flavour without it refuses)
        if has_file:
            strategy = user_value(prov, "kt.expert_placement", "frequency", "auto: " + _describe(facts))
        else:
            why = facts.missing if facts is not None and facts.missing else "no expert stats"
            strategy = user_value(prov, "kt.expert_placement", "uniform", f"auto: {why}; {_CALIBRATE}")
    elif chosen is not None:
        strategy = user_value(prov, "kt.expert_placement", chosen)
    else:
        strategy = None
    if strategy is not None:
        values["kt.expert_placement"] = strategy
    frequency = strategy is not None and strategy.value == "frequency"
    if chosen == "frequency" and not has_file and not (stats_key is not None and facts is not None and facts.missing):
        why = facts.missing if facts is not None and facts.missing else "no kt.expert_stats"
        out.append(error("KT-E580", f"kt.expert_placement: frequency without expert stats ({why}): sglang-kt would "
                         "warn and silently place experts uniformly",
                         f"set kt.expert_stats to a recorder .pt or a workload name; {_CALIBRATE}",
                         {"key": "kt.expert_placement"}))
    if stats_key is not None and not frequency:
        out.append(warning("KT-W582", f"kt.expert_stats is set but kt.expert_placement is "
                           f"{strategy.value if strategy else 'unset (uniform)'}: sglang-kt reads the stats only for "
                           "frequency placement, so they are not passed",
                           "set kt.expert_placement: frequency (or auto), or remove kt.expert_stats",
                           {"key": "kt.expert_stats"}))
    if frequency and has_file:
        src = "profile" if facts.source == "profile" else "derived"
        values["kt.expert_stats"] = (user_value(prov, "kt.expert_stats", facts.path) if src == "profile" else
                                     Resolved(facts.path, "derived", _describe(facts)))
        _check_findings(facts, inp, out)
    plan = _plan(inp, values, strategy.value if strategy else None, facts if frequency else None,
                 facts if has_file else None)
    if plan is not None:
        values["placement.plan"] = Resolved(plan, "derived", "the placement's per-layer GPU experts")
        m = inp.model
        want = min(plan.budget, len(plan.moe_layers) * m.num_experts)
        if frequency and plan.per_layer is not None and sum(plan.per_layer) < want:
            out.append(warning("KT-W584", f"frequency placement puts {sum(plan.per_layer)} of the {plan.budget} GPU "
                               f"experts on MoE layers: {facts.path} has counts on layers without experts, where "
                               "kt-kernel's global top-k spends the rest (sglang-kt then marks those dense layers all "
                               "GPU, which holds nothing)",
                               "record the stats with SGLang's recorder on this model (`kt-launch calibrate`): it "
                               "counts only MoE layers", {"key": "kt.expert_stats", "file": facts.path or ""}))
        if frequency and m is not None and m.kt_moe_layers and m.kt_moe_layers > len(m.moe_layers):
            out.append(warning("KT-W583", f"sglang-kt counts {m.kt_moe_layers} MoE layers where "
                               f"{len(m.moe_layers)} hold experts: uniform placement leaves part of the GPU-expert "
                               "total on layers that load nothing (the memory plan assumes so), frequency puts all of "
                               "it on real ones, so the GPU holds more expert weights than planned",
                               "lower kt.num_gpu_experts by that share, or keep uniform placement",
                               {"key": "kt.expert_placement"}))


def _describe(facts: StatsFacts) -> str:
    if facts.source == "calibration":
        return f"calibration {facts.workload!r} of this model ({facts.path})"
    return f"kt.expert_stats {facts.path}"


def _check_findings(facts: StatsFacts, inp: ResolveInput, out: list[Finding]) -> None:
    key = {"key": "kt.expert_stats", "file": facts.path or ""}
    if not (facts.path or "").endswith(".pt"):
        out.append(error("KT-E585", f"kt.expert_stats {facts.path}: sglang-kt reads the stats only from a file named "
                         "*.pt (kt_ep_wrapper.py:4627) and would silently place experts uniformly",
                         "rename (or link) the file to end in .pt", key))
    c = facts.check
    if c is None:
        why = facts.unchecked or "not checked"
        if facts.skipped:  # the user's --dry-run / --no-check, not a failed check
            out.append(info("KT-I580", f"kt.expert_stats {facts.path}: {why}", "run `kt-launch check --profile "
                            "PROFILE`, which loads it in runtime.python", key))
        else:
            out.append(warning("KT-W580", f"kt.expert_stats {facts.path} was not checked: {why}",
                               "install torch in runtime.python (sglang-kt needs it anyway)", key))
        return
    if c.ok:
        return
    if c.problem == SHAPE:
        out.append(error("KT-E581", c.message, "record the stats with this model (`kt-launch calibrate`), or point "
                         "kt.expert_stats at the file recorded for it", key))
    elif c.problem in (NEGATIVE, ALL_ZERO, NOT_NUMBER):
        out.append(error("KT-E582", c.message, "record the stats again (`kt-launch calibrate`): the recorder "
                         "writes non-negative counts", key))
    else:
        out.append(error("KT-E583", c.message, "give the .pt the SGLang expert-distribution recorder wrote (a dict "
                         "with logical_count, or a [buffer, layers, experts] tensor)", key))


def _plan(inp: ResolveInput, values: dict[str, Resolved], strategy: str | None, freq: StatsFacts | None,
          any_stats: StatsFacts | None) -> PlacementPlan | None:
    m = inp.model
    if m is None or strategy is None or not m.moe_layers:
        return None
    n = values.get("kt.num_gpu_experts")
    ratio = values.get("kt.gpu_experts_ratio")
    counted = m.kt_moe_layers or len(m.moe_layers)
    if ratio is not None and ratio.value is not None:
        budget = int(counted * m.num_experts * float(ratio.value))
    elif n is not None and n.value is not None:
        budget = int(n.value) * counted
    else:
        return None
    layers = tuple(m.moe_layers)
    check = any_stats.check if any_stats is not None and any_stats.check is not None and any_stats.check.ok else None
    uniform_served = check.uniform_served.get(budget) if check else None
    served = per_layer = None
    note = ""
    if strategy == "uniform":
        per, rem = divmod(budget, len(layers))
        per_layer = tuple(min(per + (1 if i < rem else 0), m.num_experts) for i in range(len(layers)))
        served, note = uniform_served, "sglang-kt's generate_uniform_masks: the same count per MoE layer"
    elif strategy == "front-loading":
        left, pl = budget, []
        for _ in layers:
            pl.append(min(left, m.num_experts))
            left -= pl[-1]
        per_layer, note = tuple(pl), "front-loading fills MoE layers from the first one"
    elif strategy == "random":
        note = "random (seed 42): the count per layer varies around the mean; not computed"
    elif freq is not None:
        c = freq.check
        if c is None:
            note = f"per-layer counts need the checked stats file ({freq.unchecked or 'not checked'})"
        elif not c.ok:
            note = "the stats file was refused (see the findings)"
        elif c.masks_error:
            note = f"per-layer counts not computed: {c.masks_error}"
        elif budget in c.per_layer:
            per_layer, served = c.per_layer[budget], c.served.get(budget)
            note = (f"kt-kernel {c.kt_kernel or ''}'s generate_gpu_experts_masks over the recorded counts: the global "
                    "top counts across all layers").replace("kt-kernel 's", "kt-kernel's")
        else:
            note = f"no mask computed for a total of {budget} GPU experts"
    return PlacementPlan(strategy=strategy, budget=budget, moe_layers=layers, per_layer=per_layer, served=served,
                         uniform_served=uniform_served,
                         stats=freq.path if freq is not None else None, note=note)
