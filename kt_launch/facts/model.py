"""Model facts from the HF `config.json`: MoE shape (experts, top-k, which layers are MoE).

Understands DeepSeek-V2/V3 and Kimi-K2 (`n_routed_experts`, `first_k_dense_replace`, `moe_layer_freq`),
Qwen3-MoE (`num_experts`, `decoder_sparse_step`, `mlp_only_layers`), Mixtral (`num_local_experts`), ERNIE-4.5
(`moe_num_experts`, `moe_k`, `moe_layer_start_index/end_index/interval`), Hunyuan (per-layer `moe_topk`,
`moe_intermediate_size`) and Llama-4 (`interleave_moe_layer_step`); core/archs.py holds the table per architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kt_launch.core.archs import arch_of, sglang_kt_model_file
from kt_launch.core.model import ModelFacts


# No published MoE has more than a few hundred experts or layers; hidden sizes are in the tens of thousands.
# A value past this is a damaged file, and believing it would size loops and allocations by it.
MAX_DIM = 1 << 20


class ModelConfigError(ValueError):
    """config.json is missing, unreadable or lacks the MoE keys; the message names the file and key. `fix` is what
    to do when it is not "point model.path at a model dir" (an architecture kt-launch does not know)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


# Keys in order of preference: the first one set wins (core/archs.py says which architecture uses which).
EXPERT_KEYS = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_k", "moe_topk")


def _moe_like_keys(cfg: dict[str, Any]) -> list[str]:
    return sorted(k for k in cfg if isinstance(k, str) and ("expert" in k.lower() or "moe" in k.lower()))[:8]


def _unknown(cfg: dict[str, Any], where: str, missing: tuple[str, ...]) -> ModelConfigError:
    """The error for a config.json without the keys kt-launch reads: names the architecture, whether kt-launch knows
    it, the MoE-looking keys it does have, and whether sglang-kt 0.7.2 serves it with kt-kernel (its model list)."""
    archs = cfg.get("architectures")
    arch = str(archs[0])[:100] if isinstance(archs, list) and archs else f"model_type {cfg.get('model_type')!r}"[:100]
    served = sglang_kt_model_file(arch)
    sglang = (f"sglang-kt 0.7.2 builds it with FusedMoE, which kt-kernel serves ({served})" if served else
              "sglang-kt 0.7.2 has no MoE model of this architecture, so kt-kernel cannot serve it")
    keys = _moe_like_keys(cfg)
    has = f"its config has {', '.join(keys)}" if keys else "its config has no expert or MoE key (a dense model?)"
    if arch_of(arch) is None:
        return ModelConfigError(f"{where}: {arch}: unknown to kt-launch; {has}, and none of {', '.join(missing)}; "
                                f"{sglang}",
                                "kt-launch cannot size this architecture; tell the kt-launch project the "
                                "architecture and its config.json keys" if served else
                                "serve a MoE architecture that sglang-kt builds with kt-kernel")
    return ModelConfigError(f"{where}: {arch} reads its routed experts from {', '.join(missing)}, and none is set; "
                            f"{has}", "check that config.json is the model's own, intact")


def shape_from_config(cfg: dict[str, Any], where: str = "config.json") -> ModelFacts:
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"{where}: top level is not a JSON object")
    text = cfg.get("text_config")
    if isinstance(text, dict) and "hidden_size" in text:
        cfg = {**cfg, **text}

    def need(*keys: str) -> Any:
        for k in keys:
            v = cfg.get(k)
            if v is not None:
                return v
        raise _unknown(cfg, where, keys)

    def as_int(v: Any, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ModelConfigError(f"{where}: {key} must be an integer, got {v!r}"[:300])
        if not 1 <= v <= MAX_DIM:
            raise ModelConfigError(f"{where}: {key}={v} is outside 1..{MAX_DIM}; is this config.json intact?"[:300])
        return v

    def key_of(keys: tuple[str, ...]) -> str:
        return next((k for k in keys if cfg.get(k) is not None), keys[0])

    model_type = str(cfg.get("model_type", "unknown"))
    hidden = as_int(need("hidden_size"), "hidden_size")
    layers = as_int(need("num_hidden_layers"), "num_hidden_layers")
    experts = as_int(need(*EXPERT_KEYS), key_of(EXPERT_KEYS))
    moe_layers = _moe_layers(cfg, layers, where)
    top_k = as_int(_per_layer(need(*TOP_K_KEYS), key_of(TOP_K_KEYS), moe_layers, where), key_of(TOP_K_KEYS))
    naming = "deepseek"
    if "num_local_experts" in cfg and "n_routed_experts" not in cfg and "num_experts" not in cfg:
        naming = "mixtral"
        inter = as_int(need("intermediate_size"), "intermediate_size")
    else:
        key = key_of(("moe_intermediate_size", "intermediate_size"))
        inter = as_int(_per_layer(need("moe_intermediate_size", "intermediate_size"), key, moe_layers, where), key)
    _check_whole(cfg, where, layers, experts, top_k, moe_layers)
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    return ModelFacts(model_type, hidden, inter, experts, top_k, layers, moe_layers, dtype, naming,
                      **attention_facts(cfg, layers, hidden))


# SGLang's MLA architectures (model_config.py: the KV cache is kv_lora_rank + qk_rope_head_dim per token and layer)
MLA_ARCHITECTURES = frozenset({"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM",
                               "DeepseekV3ForCausalLMNextN", "KimiVLForConditionalGeneration"})
MLA_KEYS = ("kv_lora_rank", "qk_rope_head_dim")


def _check_whole(cfg: dict[str, Any], where: str, layers: int, experts: int, top_k: int,
                 moe_layers: tuple[int, ...]) -> None:
    """The shape as a whole must be one a model can have; each key alone may be fine. Names the keys."""
    if top_k > experts:
        raise ModelConfigError(f"{where}: num_experts_per_tok={top_k} is more than the {experts} routed experts "
                               "(n_routed_experts): a token cannot pick more experts than a layer has")
    first = cfg.get("first_k_dense_replace")
    if isinstance(first, int) and not isinstance(first, bool) and first >= layers:
        raise ModelConfigError(f"{where}: first_k_dense_replace={first} is not below num_hidden_layers={layers}: "
                               "every layer would be dense, and kt-kernel has no MoE layer to serve")
    if not moe_layers:
        raise ModelConfigError(f"{where}: no layer of num_hidden_layers={layers} is a MoE layer (see "
                               "first_k_dense_replace, moe_layer_freq, decoder_sparse_step, mlp_only_layers)")
    archs = cfg.get("architectures")
    arch = next((a for a in archs if a in MLA_ARCHITECTURES), None) if isinstance(archs, list) else None
    if arch is not None:
        for key in MLA_KEYS:
            v = cfg.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_DIM:
                shown = "missing" if v is None else f"{v!r}"[:40]
                raise ModelConfigError(f"{where}: {arch} is an MLA architecture, but {key} is {shown}: SGLang sizes "
                                       "its KV cache by it; is this config.json intact?")


def attention_facts(cfg: dict[str, Any], layers: int, hidden: int) -> dict[str, Any]:
    """The config.json values SGLang sizes its KV cache and kt its GPU-expert masks by. A value that is missing or
    not a sane integer reads as 0 (the memory plan then says it cannot size that part), never as an exception.

    MLA when `kv_lora_rank` is set (DeepSeek-V2/V3, Kimi-K2: SGLang's MLA architectures, model_config.py:516-534),
    else MHA/GQA with `num_key_value_heads` (default: the attention heads) and `head_dim` (default hidden/heads,
    model_config.py:495-504)."""
    def num(key: str, default: int = 0) -> int:
        v = cfg.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= (1 << 31) else default

    heads = num("num_attention_heads")
    out: dict[str, Any] = {"num_attention_heads": heads, "vocab_size": num("vocab_size"),
                           "context_length": num("max_position_embeddings") or num("max_sequence_length")}
    if num("kv_lora_rank"):
        out.update(attention="mla", kv_lora_rank=num("kv_lora_rank"), qk_rope_head_dim=num("qk_rope_head_dim"),
                   qk_nope_head_dim=num("qk_nope_head_dim"), v_head_dim=num("v_head_dim"),
                   num_kv_heads=num("num_key_value_heads", heads))
    elif heads:
        head_dim = num("head_dim", hidden // heads)
        out.update(attention="gqa", num_kv_heads=num("num_key_value_heads", heads), head_dim=head_dim,
                   v_head_dim=num("v_head_dim", head_dim))
        out.update(compressed_facts(cfg, num, head_dim))
    q = cfg.get("quantization_config")
    if isinstance(q, dict) and isinstance(q.get("quant_method"), str):
        out["quant_method"] = q["quant_method"][:40]
    # sglang-kt's own count (kt_ep_wrapper.py:4546-4574): layers >= first_k_dense_replace (less num_hash_layers)
    # with i % moe_layer_freq == 0; a list-form moe_layer_freq starts at its first true entry.
    first = max(0, num("first_k_dense_replace") - num("num_hash_layers"))
    freq = cfg.get("moe_layer_freq", 1)
    if isinstance(freq, list):
        first = max(first, next((i for i, v in enumerate(freq) if v), 0))
        freq = 1
    freq = freq if isinstance(freq, int) and not isinstance(freq, bool) and freq > 0 else 1
    out["kt_moe_layers"] = sum(1 for i in range(layers) if i >= first and i % freq == 0)
    out.update(memory_facts(cfg, num))
    out.update(hybrid_facts(cfg, layers, num))
    out.update(swa_facts(cfg, layers))
    return out


# sglang-kt 0.7.2 configs/model_config.py:1479-1491 `is_hybrid_swa_model` (the MoE architectures kt-launch plans)
HYBRID_SWA_ARCHITECTURES = frozenset({"Llama4ForConditionalGeneration", "GptOssForCausalLM", "MiMoV2FlashForCausalLM"})


def swa_facts(cfg: dict[str, Any], layers: int) -> dict[str, Any]:
    """Sliding-window layers as SGLang's hybrid SWA pool counts them (configs/model_config.py:1494-1513
    `get_hybrid_layer_ids`): Llama4ForConditionalGeneration's layers with (i + 1) % 4 != 0 (chunked attention; the
    rest are full), gpt-oss's `layer_types` "sliding_attention", MiMo-V2-Flash's `hybrid_layer_pattern` 1s (whose
    sliding-window layers have their own swa_num_key_value_heads / swa_head_dim / swa_v_head_dim). Llama4ForCausalLM
    (text only) is not a hybrid SWA architecture there: every layer full. Nothing for other models, or a config
    without its list."""
    arch = cfg.get("architectures")
    arch = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else ""
    if arch not in HYBRID_SWA_ARCHITECTURES:
        return {}
    if arch == "Llama4ForConditionalGeneration":
        swa = sum(1 for i in range(layers) if (i + 1) % 4 != 0)
        return {"swa_layers": swa, "kv_layers": layers - swa}
    if arch == "MiMoV2FlashForCausalLM":
        pattern = cfg.get("hybrid_layer_pattern")
        if not (isinstance(pattern, list) and len(pattern) >= layers
                and all(p in (0, 1) and not isinstance(p, bool) for p in pattern[:layers])):
            return {}
        swa = sum(pattern[:layers])
        full = layers - swa
    else:
        types = cfg.get("layer_types")
        if not isinstance(types, list):
            return {}
        swa = sum(1 for t in types[:layers] if t == "sliding_attention")
        full = sum(1 for t in types[:layers] if t == "full_attention")
    if not swa or swa + full != layers:
        return {}

    def num(key: str) -> int:
        v = cfg.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_DIM else 0
    return {"swa_layers": swa, "kv_layers": full, "swa_kv_heads": num("swa_num_key_value_heads"),
            "swa_head_dim": num("swa_head_dim"), "swa_v_head_dim": num("swa_v_head_dim")}


def compressed_facts(cfg: dict[str, Any], num, head_dim: int) -> dict[str, Any]:
    """DeepSeek-V4's compressed attention as sglang-kt 0.7.2 reads it (configs/model_config.py:566-579,
    configs/deepseek_v4.py defaults): qk_rope_head_dim, qk_nope_head_dim = head_dim - qk_rope_head_dim (the
    2604 checkpoint) or its own key, the window (sliding_window, else window_size, else 128), index_head_dim and
    compress_ratios (one per layer, each 0, 4 or 128: deepseekv4_memory_pool.py:24-31 allows no other). Nothing
    for other architectures or a list SGLang would refuse."""
    arch = cfg.get("architectures")
    if not (isinstance(arch, list) and arch and arch[0] == "DeepseekV4ForCausalLM"):
        return {}
    ratios = cfg.get("compress_ratios")
    if not (isinstance(ratios, list) and 0 < len(ratios) <= MAX_DIM
            and all(r in (0, 4, 128) and not isinstance(r, bool) for r in ratios)):
        return {}
    rope = num("qk_rope_head_dim", 64)
    nope = num("qk_nope_head_dim") or head_dim - rope
    if nope <= 0:
        return {}
    return {"attention": "compressed", "qk_rope_head_dim": rope, "qk_nope_head_dim": nope,
            "window": num("sliding_window") or num("window_size") or 128, "compress_ratios": tuple(ratios),
            "index_head_dim": num("index_head_dim", 128)}


def hybrid_facts(cfg: dict[str, Any], layers: int, num) -> dict[str, Any]:
    """Hybrid linear attention as SGLang reads it (configs/qwen3_next.py:255-300, which Qwen3.5's text config inherits,
    configs/qwen3_5.py:28,138): layer l is full attention when (l + 1) % full_attention_interval == 0, else a
    Gated-DeltaNet layer whose state per request is sized by the linear_* keys (`mamba2_cache_params`) in
    mamba_ssm_dtype (configs/mamba_utils.py `mamba2_state_dtype`: float32 by default). Without
    full_attention_interval, a `layer_types` list names the full_attention layers. Nothing for other models."""
    interval = num("full_attention_interval")
    types = cfg.get("layer_types")
    if interval:
        full = sum(1 for i in range(layers) if (i + 1) % interval == 0)
    elif isinstance(types, list) and "linear_attention" in types:
        full = sum(1 for t in types[:layers] if t == "full_attention")
    else:
        return {}
    if not (num("linear_num_value_heads") and num("linear_value_head_dim") and num("linear_key_head_dim")):
        return {}
    ssm = {"bfloat16": 2, "float16": 2}.get(str(cfg.get("mamba_ssm_dtype")), 4)
    return {"kv_layers": full, "linear_layers": layers - full, "linear_key_heads": num("linear_num_key_heads"),
            "linear_value_heads": num("linear_num_value_heads"), "linear_key_head_dim": num("linear_key_head_dim"),
            "linear_value_head_dim": num("linear_value_head_dim"),
            "linear_conv_kernel": num("linear_conv_kernel_dim", 4), "linear_ssm_bytes": ssm}


def memory_facts(cfg: dict[str, Any], num) -> dict[str, Any]:
    """What the memory plan adds to the shape: the NSA indexer (configs/model_config.py:55-80 `is_deepseek_nsa`:
    index_topk set), a vision tower (server_args.py:6707-6743 reads vision_config num_hidden_layers / hidden_size;
    Kimi-K2.5's config names them vt_*), the FP8 block size and the architecture. Bad values read as absent."""
    out: dict[str, Any] = {}
    arch = cfg.get("architectures")
    if isinstance(arch, list) and arch and isinstance(arch[0], str):
        out["architecture"] = arch[0][:100]
    if cfg.get("index_topk") is not None and num("index_head_dim"):
        out["index_head_dim"] = num("index_head_dim")
    vc = cfg.get("vision_config")
    if isinstance(vc, dict):
        def vnum(*keys: str) -> int:
            v = next((vc[k] for k in keys if k in vc), 0)
            return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_DIM else 0
        out["vision_layers"] = vnum("num_hidden_layers", "vt_num_hidden_layers") or 24  # SGLang's getattr default
        out["vision_hidden"] = vnum("hidden_size", "vt_hidden_size") or 1024
    q = cfg.get("quantization_config")
    block = q.get("weight_block_size") if isinstance(q, dict) else None
    if isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and not isinstance(b, bool)
                                                            and 0 < b <= MAX_DIM for b in block):
        out["weight_block"] = tuple(block)
    return out


def _per_layer(v: Any, key: str, moe_layers: tuple[int, ...], where: str) -> Any:
    """A per-layer list (Hunyuan's moe_topk, moe_intermediate_size; hunyuan.py:135-149 reads entry layer_id) as the
    one value its MoE layers share. kt-kernel builds every MoE layer with one shape, so differing values are an
    error naming the key; anything not a list is returned as is (as_int judges it)."""
    if not isinstance(v, list):
        return v
    if not moe_layers or len(v) <= max(moe_layers):
        raise ModelConfigError(f"{where}: {key} has {len(v)} entries, one per layer is needed (MoE layers up to "
                               f"{max(moe_layers, default=0)})")
    got = {v[i] for i in moe_layers if isinstance(v[i], int) and not isinstance(v[i], bool)}
    if len(got) != 1 or any(isinstance(v[i], bool) or not isinstance(v[i], int) for i in moe_layers):
        shown = repr(sorted(got))[:60]
        raise ModelConfigError(f"{where}: {key} differs between MoE layers ({shown}): kt-kernel serves one expert "
                               "shape for every layer")
    return got.pop()


def _moe_layers(cfg: dict[str, Any], layers: int, where: str = "config.json") -> tuple[int, ...]:
    """Which layers are MoE. A layout key of the wrong type is an error naming it, never a TypeError."""
    def count(key: str, default: int) -> int:
        v = cfg.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_DIM:
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise ModelConfigError(f"{where}: {key} must be a whole number from 0 to {MAX_DIM}, got {shown}")
        return v

    if "first_k_dense_replace" in cfg or "n_routed_experts" in cfg:
        first = count("first_k_dense_replace", 0)
        if isinstance(cfg.get("moe_layer_freq"), list):
            freq = cfg["moe_layer_freq"]
            return tuple(i for i in range(layers) if i < len(freq) and freq[i])
        freq = count("moe_layer_freq", 1) or 1
        return tuple(i for i in range(layers) if i >= first and i % freq == 0)
    if "moe_layer_start_index" in cfg or "moe_layer_end_index" in cfg or "moe_layer_interval" in cfg:
        # ERNIE-4.5 (sglang-kt ernie4.py:176-186): start <= i <= end and (i - start) % interval == 0; end < 0 = last
        start = count("moe_layer_start_index", 0)
        end_v = cfg.get("moe_layer_end_index")
        end = layers - 1 if end_v is None or (isinstance(end_v, int) and not isinstance(end_v, bool) and end_v < 0) \
            else count("moe_layer_end_index", layers - 1)
        step = count("moe_layer_interval", 1) or 1
        return tuple(i for i in range(layers) if start <= i <= end and (i - start) % step == 0)
    if "interleave_moe_layer_step" in cfg:
        # Llama-4 (sglang-kt llama4.py:425-428): (i + 1) % interleave_moe_layer_step == 0; 0 = every layer
        step = count("interleave_moe_layer_step", 1)
        return tuple(i for i in range(layers) if step == 0 or (i + 1) % step == 0)
    if "decoder_sparse_step" in cfg or "mlp_only_layers" in cfg:
        step = count("decoder_sparse_step", 1) or 1
        dense = cfg.get("mlp_only_layers") or []
        if not isinstance(dense, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in dense):
            raise ModelConfigError(f"{where}: mlp_only_layers must be a list of layer numbers")
        dense = set(dense)
        return tuple(i for i in range(layers) if i not in dense and (i + 1) % step == 0)
    return tuple(range(layers))


def read_model_facts(model_path: str) -> ModelFacts:
    """Read `<model_path>/config.json`. Raises ModelConfigError naming the file."""
    from kt_launch.facts.reader import MODEL_CONFIG, Missing, ReadError, read_json

    p = Path(model_path) / "config.json"
    try:
        cfg = read_json(p, MODEL_CONFIG)  # bounded: a FIFO, /dev/zero, deep nesting or 1e400 is a message
    except Missing:
        raise ModelConfigError(f"{p}: not found; model.path must be a HuggingFace model directory") from None
    except ReadError as e:
        raise ModelConfigError(str(e)) from None
    return shape_from_config(cfg, str(p))


def has_chat_template(model_path: str | None) -> bool | None:
    """Whether the model dir carries a chat template, as SGLang looks for one: `chat_template` in
    tokenizer_config.json, or a chat_template.jinja / chat_template.json beside it. None: no readable model dir
    (a --url server, --no-check paths that are elsewhere): the caller assumes a chat model."""
    from kt_launch.facts.reader import TOKENIZER_CONFIG, Missing, ReadError, read_json

    if not model_path or not Path(model_path).is_dir():
        return None
    base = Path(model_path)
    if any((base / name).is_file() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    try:
        doc = read_json(base / "tokenizer_config.json", TOKENIZER_CONFIG)
    except Missing:
        return False
    except ReadError:
        return None
    return isinstance(doc, dict) and bool(doc.get("chat_template"))
