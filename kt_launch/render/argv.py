"""LaunchPlan -> argv list and environment for the chosen flavour. Never a shell string."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kt_launch.render.flavors import CATALOGUE, KEY_FLAGS, Flavor, flavor_named
from kt_launch.resolve.findings import Finding, error
from kt_launch.resolve.plan import LaunchPlan


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]  # what kt-launch adds to the inherited environment
    findings: list[Finding] = field(default_factory=list)


def _fmt(value: Any) -> list[str]:
    if isinstance(value, bool):
        return []
    if isinstance(value, float) and value.is_integer():
        return [f"{value:.1f}"]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _skip(plan: LaunchPlan, flavor: Flavor, key: str) -> bool:
    """Values that are resolved for the plan table but not passed as a flag."""
    r = plan.values.get(key)
    if r is None or r.value is None or r.value is False:
        return True
    if key.startswith("moe_lora.") and flavor.moe_lora != "moe-lora-flags":
        return True  # expressed differently (sglang-kt) or refused (upstream) below
    if key == "kt.method" and flavor.moe_lora == "moe-lora-flags" and plan.get("moe_lora.sft_method") \
            and r.source == "derived":
        return True  # the seed fork takes the method from --kt-moe-sft-method
    if key == "kt.numa_nodes" and not flavor.has("--kt-numa-nodes") and r.source in ("host", "default"):
        return True  # upstream maps pool i to node i by itself
    return False


def render_command(plan: LaunchPlan) -> Command:
    flavor = flavor_named(plan.flavor, plan.accepted_flags)
    python = plan.get("runtime.python")
    argv = [python, "-m", "sglang.launch_server"]
    findings: list[Finding] = []
    for key, flag in KEY_FLAGS:
        if _skip(plan, flavor, key):
            continue
        if flag == "--disable-cuda-graph" and flavor.has("--disable-decode-cuda-graph"):
            argv += ["--disable-decode-cuda-graph", "--disable-prefill-cuda-graph"]  # upstream: the old flag is deprecated
            continue
        if not flavor.has(flag):
            findings.append(error("KT-E301", f"{key} needs {flag}, which {flavor.name} ({flavor.description}) does not "
                                  f"accept", _who_has(flag)))
            continue
        argv += [flag, *_fmt(plan.values[key].value)]
    if plan.get("moe_lora.path") is not None and flavor.moe_lora == "expert-lora-path":
        argv += ["--kt-expert-lora-path", plan.get("moe_lora.path")]
    elif plan.get("moe_lora.path") is not None and flavor.moe_lora is None:
        findings.append(error("KT-E302", f"moe_lora is set but {flavor.name} has no MoE-expert LoRA support",
                              "use runtime.flavor: sglang-kt (--kt-expert-lora-path) or kt-moe-lora"))
    if flavor.needs_shared_experts_fusion_off:
        argv.append("--disable-shared-experts-fusion")
    extra = list(plan.get("server.extra_args") or [])
    findings += _duplicates(argv, extra + plan.passthrough)
    if plan.accepted_flags is not None:
        findings += _unknown(extra + plan.passthrough, plan.accepted_flags, flavor)
    argv += extra + plan.passthrough
    env = dict(plan.get("runtime.env") or {})
    if plan.get("runtime.cuda_visible_devices") is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan.get("runtime.cuda_visible_devices")
    return Command(argv, env, findings)


def _who_has(flag: str) -> str:
    names = [f.name for f in CATALOGUE.values() if f.has(flag)]
    return f"use runtime.flavor: {' or '.join(names)}" if names else "remove the setting"


def _unknown(extra: list[str], accepted: frozenset[str], flavor: Flavor) -> list[Finding]:
    out = []
    for a in extra:
        flag = a.split("=", 1)[0]
        if flag.startswith("--") and flag not in accepted:
            out.append(error("KT-E306", f"pass-through argument {flag} is not accepted by the installed SGLang "
                             f"({flavor.name}); it would stop at startup", "check the spelling with "
                             "`python -m sglang.launch_server --help`, or remove it"))
    return out


def _duplicates(generated: list[str], extra: list[str]) -> list[Finding]:
    made = {a for a in generated if a.startswith("--")}
    out = []
    for a in extra:
        flag = a.split("=", 1)[0]
        if flag in made:
            key = next((k for k, f in KEY_FLAGS if f == flag), None)
            fix = f"use --set {key}=VALUE instead" if key else "remove it from the pass-through arguments"
            out.append(error("KT-E303", f"pass-through argument {flag} repeats a flag kt-launch generates; SGLang would "
                             "take whichever comes last", fix))
    return out
