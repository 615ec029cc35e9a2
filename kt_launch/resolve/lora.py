"""MoE-expert LoRA (SFT mode) and ordinary LoRA adapters."""

from __future__ import annotations

from kt_launch.resolve.steps import step
from kt_launch.core.profile import adapter_config_dirs, lora_entries
from kt_launch.core.findings import Finding, error, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.plan import Resolved
from kt_launch.resolve.values import user_value


@step(fills=("lora.paths", "moe_lora.path", "moe_lora.rank", "moe_lora.alpha"), reads=("adapters", "checks", "config"))
def resolve_lora(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """LoRA paths as given, and moe_lora.rank/alpha from adapter_config.json when unset."""
    cfg, prov = inp.config, inp.provenance
    entries = lora_entries(cfg)
    if entries:
        values["lora.paths"] = user_value(prov, "lora.paths",
                                          [p if n is None else f"{n}={p}" for n, p in entries])
    ml = cfg.moe_lora
    if ml is None:
        return
    values["moe_lora.path"] = user_value(prov, "moe_lora.path", ml.path)
    found = next(((d, a) for d in adapter_config_dirs(cfg) if (a := inp.adapters.get(d)) is not None), None)
    for key, attr, user in (("moe_lora.rank", "r", ml.rank), ("moe_lora.alpha", "lora_alpha", ml.alpha)):
        from_file = getattr(found[1], attr) if found else None
        if user is not None:
            values[key] = user_value(prov, key, user)
            if from_file is not None and float(from_file) != float(user):
                out.append(error("KT-E121", f"{key}={user} disagrees with `{attr}: {from_file}` in {found[1].path}; "
                                 "the LoRA would be scaled wrongly", f"set {key}={from_file} or leave it unset"))
        elif from_file is not None:
            values[key] = Resolved(from_file, "derived", f"`{attr}` in {found[1].path}")
        else:
            why = found[1].problem if found and found[1].problem else (
                "no adapter_config.json found" if inp.checks else "files not read under --no-check")
            values[key] = Resolved(None, "default", why)
            fix = f"set {key} or put adapter_config.json beside the LoRA (looked in: {', '.join(adapter_config_dirs(cfg))})"
            if inp.checks or inp.launch_here:
                out.append(error("KT-E122", f"{key} is unknown: {why}", fix))
            else:  # planning under --no-check: the machine that runs it reads adapter_config.json
                out.append(warning("KT-W122", f"{key} is not in the command: {why}; a launch reads it from "
                                   "adapter_config.json (and stops if it is not there)", fix))


@step(fills=("server.disable_cuda_graph",), reads=("config",))
def resolve_cuda_graph(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """CUDA graphs off in MoE-LoRA mode (the SFT experts return CPU tensors), else SGLang's default."""
    cfg, prov = inp.config, inp.provenance
    user = cfg.server.disable_cuda_graph
    if cfg.moe_lora is None:
        if user is not None:
            values["server.disable_cuda_graph"] = user_value(prov, "server.disable_cuda_graph", user)
        return
    if user is False:
        values["server.disable_cuda_graph"] = user_value(prov, "server.disable_cuda_graph", False)
        out.append(error("KT-E123", "server.disable_cuda_graph=false in MoE-LoRA mode: the SFT expert forward "
                         "returns CPU tensors, so CUDA graph capture fails with a cuda:0/cpu device mismatch",
                         "remove server.disable_cuda_graph (it is turned on for you)"))
        return
    values["server.disable_cuda_graph"] = Resolved(True, "derived", "MoE-LoRA experts return CPU tensors; "
                                                   "CUDA graphs cannot capture them")
    out.append(warning("KT-W121", "CUDA graphs are disabled: MoE-LoRA (SFT) experts run synchronously on the CPU "
                       "and return CPU tensors; expect lower decode throughput than plain inference"))
