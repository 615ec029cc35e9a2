"""Where kt-kernel reads the CPU experts from, and how many bytes the headers say they are. Pure.

Shared by the weight preflight (which judges those files) and the memory plan (which counts their bytes), so
neither imports the other.
"""

from __future__ import annotations

from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.methods import KT_METHOD_FOR_SFT
from kt_launch.resolve.preflight import Values, artifacts


def bf16_sft_source(inp: ResolveInput, values: Values, a):
    """(field, path, ExpertSet, broken shards?) where AMXBF16_SFT reads BF16 experts; None when not checkable.

    The seed's fork reads model.path (seed bug 3); sglang-kt reads kt.weight_path (KTConfig.weight_path),
    where pre-converted `_layer_*/_numa_*/*.kt` files are also accepted."""
    wp = values.get("kt.weight_path")
    if values["runtime.flavor"].value == "sglang-kt" and wp is not None and wp.value \
            and wp.value != inp.config.model.path:
        w = a.weights
        if w is None or w.path != wp.value or w.node.kind != "directory" or w.amx_form == "kt":
            return None  # a missing dir is check_weight_dir's; .kt files are a valid BF16 SFT source
        return "kt.weight_path", w.path, w.hf, any(not f.ok_safetensors for f in w.safetensors)
    md = a.model
    if md is None or md.node.kind != "directory":
        return None
    return "model.path", md.path, md.experts, bool(md.missing_shards) or not all(s.ok_safetensors for s in md.shards)


def consumed_weights(inp: ResolveInput, values: Values) -> tuple[str, str] | None:
    """(method whose layout kt.weight_path must have, path), or None when kt-kernel does not read it."""
    ml = inp.config.moe_lora
    if ml is not None:
        sft = values["moe_lora.sft_method"].value
        if sft == "AMXBF16_SFT":
            return None
        method = KT_METHOD_FOR_SFT[sft]
    else:
        method = values["kt.method"].value
    wp = values.get("kt.weight_path")
    if wp is None or wp.value is None:
        return None
    return method, wp.value


def _built_layers_bytes(experts, model) -> int:
    """Routed-expert bytes of the layers SGLang builds (layer < num_hidden_layers): kt-kernel loads one MoE layer's
    experts per FusedMoE, so a next-n / MTP layer's experts in the same checkpoint (DeepSeek-V3's layer 61,
    GLM-5's 78) stay on disk without speculative decoding (as facts/weights.py skips them on the GPU side)."""
    if model is None or not experts.layer_bytes:
        return experts.nbytes
    return sum(b for layer, b in experts.layer_bytes.items() if layer < model.num_layers)


def read_expert_bytes(inp: ResolveInput, values: Values) -> tuple[int, str] | None:
    a = artifacts(inp)
    if a is None:
        return None
    got = consumed_weights(inp, values)
    if got is None:  # AMXBF16_SFT: BF16 experts from model.path (sglang-kt: kt.weight_path)
        src = bf16_sft_source(inp, values, a) if inp.config.moe_lora is not None else None
        return (src[2].nbytes, src[0]) if src is not None and src[2].present else None
    _, path = got
    w = a.weights if a.weights is not None and a.weights.path == path else None
    if w is not None:
        n = w.amx_nbytes or _built_layers_bytes(w.hf, inp.model) or sum(f.size for f in w.gguf)
        return (n, "kt.weight_path") if n else None
    if a.model is not None and path == inp.config.model.path and a.model.experts.present:
        return a.model.experts.nbytes, "model.path"
    return None
