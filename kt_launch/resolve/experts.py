"""Which experts run where, with which kt-kernel method, reading which weights."""

from __future__ import annotations

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.methods import (INFERENCE_METHODS, KT_METHOD_FOR_SFT, NEEDS_CONVERTED, NEVER_AVAILABLE,
                                       READS_HF_CHECKPOINT, SFT_BASE_WEIGHTS, SFT_FROM_KT_METHOD)
from kt_launch.core.plan import Resolved
from kt_launch.resolve.values import user_value


def resolve_method(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    cfg, prov = inp.config, inp.provenance
    method = cfg.kt.method
    if cfg.moe_lora is not None:
        sft = cfg.moe_lora.sft_method
        values["moe_lora.sft_method"] = user_value(prov, "moe_lora.sft_method", sft,
                                                   "" if prov.of("moe_lora.sft_method") else "AMXBF16_SFT is the default")
        want = KT_METHOD_FOR_SFT[sft]
        if method is None:
            values["kt.method"] = Resolved(want, "derived", f"the kt-kernel method behind {sft}")
        else:
            values["kt.method"] = user_value(prov, "kt.method", method)
            if SFT_FROM_KT_METHOD.get(method) != sft:
                out.append(error("KT-E110", f"kt.method={method} does not serve moe_lora.sft_method={sft} "
                                 f"(SGLang maps kt.method to the SFT method)",
                                 f"set kt.method={want} or remove kt.method"))
        return
    if method is None:
        values["kt.method"] = Resolved("AMXINT4", "default", "SGLang's default; set kt.method to match kt.weight_path")
        return
    values["kt.method"] = user_value(prov, "kt.method", method)
    if method not in INFERENCE_METHODS:
        hint = " (AMXBF16 is only valid with moe_lora)" if method == "AMXBF16" else ""
        out.append(error("KT-E111", f"kt.method={method} is not a kt-kernel 0.7.2 inference method{hint}",
                         f"use one of {', '.join(m for m in INFERENCE_METHODS if m not in NEVER_AVAILABLE)}"))
    elif method in NEVER_AVAILABLE:
        out.append(error("KT-E112", f"kt.method={method} passes kt-kernel's validation but no CPU variant of "
                         "kt-kernel 0.7.2 implements it", "use AMXINT4, AMXINT8 or BF16"))


def resolve_weights(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """kt.weight_path and, in MoE-LoRA mode, where the base expert weights are read (seed bug 3)."""
    cfg, prov = inp.config, inp.provenance
    wp = cfg.kt.weight_path
    method = values["kt.method"].value
    if cfg.moe_lora is not None:
        sft = cfg.moe_lora.sft_method
        source = SFT_BASE_WEIGHTS[sft]
        fork_reads_hf = values["runtime.flavor"].value == "kt-moe-lora"
        if source == "model.path" and fork_reads_hf:
            values["moe_lora.base_weights"] = Resolved(cfg.model.path, "derived",
                                                       f"{sft} reads BF16 experts from the HF model dir (model.path)")
            if wp is not None:
                values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp, f"passed on, but {sft} does not read it")
                out.append(warning("KT-W111", f"kt.weight_path={wp} is given but {sft} reads its base experts from "
                                   f"model.path ({cfg.model.path}); kt.weight_path only switches kt-kernel on",
                                   "use AMXINT8_SFT/AMXINT4_SFT to serve converted weights, or drop kt.weight_path"))
            else:
                values["kt.weight_path"] = Resolved(cfg.model.path, "derived",
                                                    "SGLang enables kt-kernel only with --kt-weight-path; "
                                                    f"{sft} reads the HF dir")
        elif source == "model.path":
            # sglang-kt hands --kt-weight-path to kt-kernel as the SFT base weights: .kt files or BF16 HF safetensors.
            if wp is None:
                values["kt.weight_path"] = Resolved(cfg.model.path, "derived",
                                                    f"{sft} reads BF16 experts; the HF model dir has them")
            else:
                values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp)
            values["moe_lora.base_weights"] = Resolved(values["kt.weight_path"].value, "derived",
                                                       f"sglang-kt reads {sft} base experts from --kt-weight-path")
        else:
            if wp is None:
                values["moe_lora.base_weights"] = Resolved(None, "derived", f"{sft} reads kt.weight_path, which is unset")
                out.append(error("KT-E113", f"moe_lora.sft_method={sft} reads its base experts from kt.weight_path, "
                                 "which is not set (kt-kernel fails after the GPU weights have loaded)",
                                 f"set kt.weight_path to the converted {sft.split('_')[0]} weight dir, or use AMXBF16_SFT"))
            else:
                values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp)
                values["moe_lora.base_weights"] = Resolved(wp, "derived", f"{sft} reads converted experts from kt.weight_path")
        return
    if wp is not None:
        values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp)
    elif method in READS_HF_CHECKPOINT:
        values["kt.weight_path"] = Resolved(cfg.model.path, "derived", f"{method} reads the original HF checkpoint")
    else:
        need = "converted AMX weights" if method in NEEDS_CONVERTED else "its weight files"
        out.append(error("KT-E114", f"kt.weight_path is not set; kt.method={method} needs {need}, and without "
                         "--kt-weight-path SGLang does not enable kt-kernel at all (all experts load on the GPU)",
                         "set kt.weight_path (e.g. the output of kt-kernel's convert_cpu_weights.py)"))


def resolve_gpu_experts(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    cfg, prov = inp.config, inp.provenance
    n, ratio = cfg.kt.num_gpu_experts, cfg.kt.gpu_experts_ratio
    model = inp.model
    if cfg.moe_lora is not None:
        if n is not None and n > 0:
            values["kt.num_gpu_experts"] = user_value(prov, "kt.num_gpu_experts", n)
            out.append(error("KT-E101", f"kt.num_gpu_experts={n} in MoE-LoRA mode: expert LoRA runs only on CPU "
                             "experts, so every expert must stay on the CPU", "set kt.num_gpu_experts=0 or leave it unset"))
        elif n == 0:
            values["kt.num_gpu_experts"] = user_value(prov, "kt.num_gpu_experts", 0)
        else:
            values["kt.num_gpu_experts"] = Resolved(0, "derived", "MoE-LoRA mode keeps every expert on the CPU "
                                                    "(unset, SGLang crashes in torch.empty(None, ...))")
        if ratio is not None:
            out.append(error("KT-E102", "kt.gpu_experts_ratio is set in MoE-LoRA mode; expert LoRA needs all experts "
                             "on the CPU", "remove kt.gpu_experts_ratio"))
        return
    if n is not None:
        values["kt.num_gpu_experts"] = user_value(prov, "kt.num_gpu_experts", n)
    else:
        values["kt.num_gpu_experts"] = Resolved(0, "default", "all routed experts on the CPU; raise it to keep some "
                                                "on the GPU when VRAM allows (always passed: unset, sglang-kt turns KT off)")
    if ratio is not None:
        values["kt.gpu_experts_ratio"] = user_value(prov, "kt.gpu_experts_ratio", ratio)
    n = values["kt.num_gpu_experts"].value
    if model is not None and n > model.num_experts:
        out.append(error("KT-E103", f"kt.num_gpu_experts={n} is more than the {model.num_experts} experts per MoE "
                         f"layer of {cfg.model.path}", f"use a value between 0 and {model.num_experts}"))


def resolve_model_shape(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    cfg = inp.config
    values["model.path"] = user_value(inp.provenance, "model.path", cfg.model.path)
    if cfg.model.served_name is not None:
        values["model.served_name"] = user_value(inp.provenance, "model.served_name", cfg.model.served_name)
        if ":" in cfg.model.served_name:
            out.append(error("KT-E107", f"model.served_name={cfg.model.served_name!r} contains ':', which SGLang rejects",
                             "pick a name without ':'"))
    m = inp.model
    if m is not None:
        values["model.shape"] = Resolved(
            f"{m.model_type}: {m.num_experts} experts, top-{m.top_k}, {len(m.moe_layers)} MoE layers, "
            f"hidden {m.hidden_size}, moe_intermediate {m.moe_intermediate_size}", "derived",
            f"from {cfg.model.path}/config.json")
    elif inp.checks:
        out.append(error("KT-E108", inp.model_problem or f"{cfg.model.path}/config.json could not be read",
                         "point model.path at the HuggingFace model directory (it holds config.json)"))
    else:
        out.append(info("KT-I101", "model shape unknown (--no-check): expert-count checks skipped"))
