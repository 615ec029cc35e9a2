"""Recorded hosts and the checkpoint layouts the memory tests use, and the published checkpoints devtools/synthetic.py
does not carry (DeepSeek-V3.2, Kimi-K2.5, Qwen3-235B-A22B, MiniMax-M2.1): config.json as published and the full
tensor list, built from synthetic's layer writers (sparse: data as holes)."""

import json
from pathlib import Path

from devtools import synthetic
from kt_launch.cli import main

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"
SHARDS = {"DeepSeek-V2-Lite": 4, "DeepSeek-V3": 163, "Qwen3-30B-A3B": 16, "Kimi-K2-Thinking": 64,
          "DeepSeek-V3.2": 163, "Kimi-K2.5": 64, "Qwen3-235B-A22B": 118, "MiniMax-M2.1": 130,
          "Qwen3-Next-80B-A3B": 41, "Qwen3-Next-80B-A3B-FP8": 41}
GiB = 1 << 30

_V3 = synthetic.REAL_MODELS["DeepSeek-V3"]
_K2 = synthetic.REAL_MODELS["Kimi-K2-Thinking"]
EXTRA_MODELS: dict[str, dict] = {
    # DeepSeek-V3.2-Exp: V3's shape plus the NSA indexer (index_topk, index_head_dim, index_n_heads)
    "DeepSeek-V3.2": {**_V3, "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
                      "index_head_dim": 128, "index_n_heads": 64, "index_topk": 2048},
    # Kimi-K2.5: Kimi-K2's text model (INT4 routed experts) under text_config, a MoonViT tower and a projector
    "Kimi-K2.5": {"architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25",
                  "text_config": {k: v for k, v in _K2.items() if k != "architectures"},
                  "vision_config": {"vt_hidden_size": 1152, "vt_num_hidden_layers": 27, "vt_intermediate_size": 4304,
                                    "merge_kernel_size": [2, 2], "patch_size": 14, "text_hidden_size": 7168}},
    "Qwen3-235B-A22B": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 4096,
        "intermediate_size": 12288, "moe_intermediate_size": 1536, "num_hidden_layers": 94, "num_experts": 128,
        "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [], "num_attention_heads": 64,
        "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "norm_topk_prob": True},
    "MiniMax-M2.1": {
        "architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2", "hidden_size": 3072,
        "intermediate_size": 1536, "num_hidden_layers": 62, "num_local_experts": 256, "num_experts_per_tok": 8,
        "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 200064,
        "max_position_embeddings": 196608, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "fmt": "float8_e4m3fn", "activation_scheme": "dynamic",
                                "weight_block_size": [128, 128]}},
}


def _v32_tensors() -> dict:
    t = synthetic.real_tensors("DeepSeek-V3")
    c = EXTRA_MODELS["DeepSeek-V3.2"]
    for layer in range(c["num_hidden_layers"] + c["num_nextn_predict_layers"]):
        p = f"model.layers.{layer}.self_attn.indexer"
        synthetic.linear(t, f"{p}.wq_b", c["index_n_heads"] * c["index_head_dim"], c["q_lora_rank"], "FP8")
        synthetic.linear(t, f"{p}.wk", c["index_head_dim"], c["hidden_size"], "FP8")
        t[f"{p}.k_norm.weight"] = ("BF16", (c["index_head_dim"],))
        t[f"{p}.k_norm.bias"] = ("BF16", (c["index_head_dim"],))
        t[f"{p}.weights_proj.weight"] = ("BF16", (c["index_n_heads"], c["hidden_size"]))
    return t


def _k25_tensors() -> dict:
    t = {"language_model." + k: v for k, v in synthetic.real_tensors("Kimi-K2-Thinking").items()}
    v = EXTRA_MODELS["Kimi-K2.5"]["vision_config"]
    h, inter, merged = v["vt_hidden_size"], v["vt_intermediate_size"], 4 * v["vt_hidden_size"]
    t["vision_tower.patch_embed.proj.weight"] = ("BF16", (h, 3, 14, 14))
    t["vision_tower.patch_embed.pos_emb.weight"] = ("BF16", (64, 64, h))
    for b in range(v["vt_num_hidden_layers"]):
        p = f"vision_tower.encoder.blocks.{b}"
        for name, shape in ((f"{p}.wqkv.weight", (3 * h, h)), (f"{p}.wqkv.bias", (3 * h,)), (f"{p}.wo.weight", (h, h)),
                            (f"{p}.wo.bias", (h,)), (f"{p}.mlp.fc0.weight", (inter, h)), (f"{p}.mlp.fc0.bias", (inter,)),
                            (f"{p}.mlp.fc1.weight", (h, inter)), (f"{p}.mlp.fc1.bias", (h,)),
                            (f"{p}.norm0.weight", (h,)), (f"{p}.norm0.bias", (h,)), (f"{p}.norm1.weight", (h,)),
                            (f"{p}.norm1.bias", (h,))):
            t[name] = ("BF16", shape)
    t["vision_tower.encoder.final_layernorm.weight"] = ("BF16", (h,))
    t["mm_projector.pre_norm.weight"] = ("BF16", (h,))
    t["mm_projector.pre_norm.bias"] = ("BF16", (h,))
    t["mm_projector.proj.0.weight"] = ("BF16", (merged, merged))
    t["mm_projector.proj.0.bias"] = ("BF16", (merged,))
    t["mm_projector.proj.2.weight"] = ("BF16", (v["text_hidden_size"], merged))
    t["mm_projector.proj.2.bias"] = ("BF16", (v["text_hidden_size"],))
    return t


def _qwen3_235b_tensors() -> dict:
    c = EXTRA_MODELS["Qwen3-235B-A22B"]
    h, vocab = c["hidden_size"], c["vocab_size"]
    t = {"model.embed_tokens.weight": ("BF16", (vocab, h)), "model.norm.weight": ("BF16", (h,))}
    for layer in range(c["num_hidden_layers"]):
        synthetic.qwen3_moe_layer(t, c, layer)
    t["lm_head.weight"] = ("BF16", (vocab, h))
    return t


def _minimax_tensors() -> dict:
    c = EXTRA_MODELS["MiniMax-M2.1"]
    h, vocab, hd = c["hidden_size"], c["vocab_size"], c["head_dim"]
    q, kv, e, mi = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd, c["num_local_experts"], c["intermediate_size"]
    t = {"model.embed_tokens.weight": ("BF16", (vocab, h)), "model.norm.weight": ("BF16", (h,)),
         "lm_head.weight": ("BF16", (vocab, h))}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
        for proj, o, i in (("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)):
            synthetic.linear(t, f"{p}.self_attn.{proj}", o, i, "FP8")
        t[f"{p}.self_attn.q_norm.weight"] = ("BF16", (q,))
        t[f"{p}.self_attn.k_norm.weight"] = ("BF16", (kv,))
        t[f"{p}.block_sparse_moe.gate.weight"] = ("BF16", (e, h))
        t[f"{p}.block_sparse_moe.e_score_correction_bias"] = ("F32", (e,))
        for x in range(e):
            for w, o, i in (("w1", mi, h), ("w3", mi, h), ("w2", h, mi)):
                synthetic.linear(t, f"{p}.block_sparse_moe.experts.{x}.{w}", o, i, "FP8")
    return t


CONFIGS = Path(__file__).resolve().parents[1] / "data" / "model_configs"
FP8_BLOCK = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
_NEXT = json.loads((CONFIGS / "Qwen--Qwen3-Next-80B-A3B-Thinking.json").read_text())
EXTRA_MODELS["Qwen3-Next-80B-A3B"] = _NEXT
EXTRA_MODELS["Qwen3-Next-80B-A3B-FP8"] = {**_NEXT, "quantization_config": FP8_BLOCK}


def _qwen3_next_layer(t: dict, c: dict, p: str, full: bool, fmt: str) -> None:
    """One Qwen3-Next decoder layer as the published checkpoint names it (sglang-kt qwen3_next.py: Gated-DeltaNet
    `linear_attn` 235-313 or gated full attention `self_attn` 601-619; the sparse MoE block with a gated shared
    expert). FP8 checkpoints quantise the projections (128x128 blocks); norms, gates and the conv stay BF16."""
    h, hd = c["hidden_size"], c["head_dim"]
    t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
    t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
    if full:
        q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
        for proj, o, i in (("q_proj", 2 * q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)):
            synthetic.linear(t, f"{p}.self_attn.{proj}", o, i, fmt)
        t[f"{p}.self_attn.q_norm.weight"] = ("BF16", (hd,))
        t[f"{p}.self_attn.k_norm.weight"] = ("BF16", (hd,))
    else:
        kd = c["linear_num_key_heads"] * c["linear_key_head_dim"]
        vd = c["linear_num_value_heads"] * c["linear_value_head_dim"]
        synthetic.linear(t, f"{p}.linear_attn.in_proj_qkvz", 2 * kd + 2 * vd, h, fmt)
        synthetic.linear(t, f"{p}.linear_attn.in_proj_ba", 2 * c["linear_num_value_heads"], h, fmt)
        t[f"{p}.linear_attn.conv1d.weight"] = ("BF16", (2 * kd + vd, 1, c["linear_conv_kernel_dim"]))
        t[f"{p}.linear_attn.dt_bias"] = ("BF16", (c["linear_num_value_heads"],))
        t[f"{p}.linear_attn.A_log"] = ("F32", (c["linear_num_value_heads"],))
        t[f"{p}.linear_attn.norm.weight"] = ("F32", (c["linear_value_head_dim"],))
        synthetic.linear(t, f"{p}.linear_attn.out_proj", h, vd, fmt)
    e, mi, sh = c["num_experts"], c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
    t[f"{p}.mlp.gate.weight"] = ("BF16", (e, h))
    t[f"{p}.mlp.shared_expert_gate.weight"] = ("BF16", (1, h))
    for proj, o, i in (("gate_proj", sh, h), ("up_proj", sh, h), ("down_proj", h, sh)):
        synthetic.linear(t, f"{p}.mlp.shared_expert.{proj}", o, i, fmt)
    for x in range(e):
        for proj, o, i in (("gate_proj", mi, h), ("up_proj", mi, h), ("down_proj", h, mi)):
            synthetic.linear(t, f"{p}.mlp.experts.{x}.{proj}", o, i, fmt)


def _qwen3_next_tensors(name: str) -> dict:
    """The published Qwen3-Next-80B-A3B tensor list: 48 layers (every 4th full attention), and the `mtp.*` block
    (one full-attention MoE layer with its fc and norms) that SGLang skips without speculative decoding
    (qwen3_next.py:1029-1041)."""
    c = EXTRA_MODELS[name]
    fmt = "FP8" if "quantization_config" in c else "BF16"
    h, vocab = c["hidden_size"], c["vocab_size"]
    t = {"model.embed_tokens.weight": ("BF16", (vocab, h)), "model.norm.weight": ("BF16", (h,))}
    for layer in range(c["num_hidden_layers"]):
        _qwen3_next_layer(t, c, f"model.layers.{layer}", (layer + 1) % c["full_attention_interval"] == 0, fmt)
    t["lm_head.weight"] = ("BF16", (vocab, h))
    t["mtp.fc.weight"] = ("BF16", (h, 2 * h))
    for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        t[f"mtp.{n}.weight"] = ("BF16", (h,))
    _qwen3_next_layer(t, c, "mtp.layers.0", True, fmt)
    return t


_BUILDERS = {"Qwen3-Next-80B-A3B": lambda: _qwen3_next_tensors("Qwen3-Next-80B-A3B"),
             "Qwen3-Next-80B-A3B-FP8": lambda: _qwen3_next_tensors("Qwen3-Next-80B-A3B-FP8"),
             "DeepSeek-V3.2": _v32_tensors, "Kimi-K2.5": _k25_tensors, "Qwen3-235B-A22B": _qwen3_235b_tensors,
             "MiniMax-M2.1": _minimax_tensors}


def tensors(name: str) -> dict:
    return _BUILDERS[name]() if name in _BUILDERS else synthetic.real_tensors(name)


def build(root: Path, name: str) -> Path:
    """A published checkpoint's HF dir: config.json and every tensor (sparse), like synthetic.real_model."""
    if name in synthetic.REAL_MODELS:
        return synthetic.real_model(root, name, shards=SHARDS[name])
    root.mkdir(parents=True, exist_ok=True)
    synthetic.write_json(root / "config.json", EXTRA_MODELS[name])
    flat, shards = list(tensors(name).items()), SHARDS[name]
    weight_map, total = {}, 0
    for k in range(shards):
        group = dict(flat[k * len(flat) // shards:(k + 1) * len(flat) // shards])
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        synthetic.write_safetensors(root / fname, group, sparse=True)
        weight_map.update({t: fname for t in group})
        total += sum(synthetic.nbytes(d, s) for d, s in group.values())
    synthetic.write_json(root / "model.safetensors.index.json", {"metadata": {"total_size": total},
                                                                  "weight_map": weight_map})
    return root


def host(name: str) -> str:
    return str(HOSTS / f"{name}.json")


def dry_json(capsys, profile, host_name: str, *sets: str) -> tuple[int, dict]:
    """The real CLI: `kt-launch --dry-run --json` against a recorded host (or a host-facts file path)."""
    argv = ["--profile", str(profile), "--host-facts", host_name if "/" in host_name else host(host_name),
            "--dry-run", "--json"]
    for s in sets:
        argv += ["--set", s]
    rc = main(argv)
    return rc, json.loads(capsys.readouterr().out)


def codes(doc: dict) -> set[str]:
    return {f["code"] for f in doc["findings"]}


# -- routed experts under other names (issue 24 item 1): the published tensor lists of each layout --------------

def _cfg(name: str) -> dict:
    c = json.loads((CONFIGS / f"{name}.json").read_text())
    return {**c, **c.get("text_config", {})}


EXTRA_MODELS["Qwen3.5-35B-A3B"] = json.loads((CONFIGS / "Qwen--Qwen3.5-35B-A3B.json").read_text())
EXTRA_MODELS["Qwen3.5-397B-A17B"] = json.loads((CONFIGS / "Qwen--Qwen3.5-397B-A17B.json").read_text())
EXTRA_MODELS["gpt-oss-120b"] = json.loads((CONFIGS / "openai--gpt-oss-120b.json").read_text())
EXTRA_MODELS["Llama-4-Scout"] = json.loads((CONFIGS / "meta-llama--Llama-4-Scout-17B-16E-Instruct.json").read_text())
EXTRA_MODELS["Llama-4-Maverick"] = json.loads(
    (CONFIGS / "meta-llama--Llama-4-Maverick-17B-128E-Instruct.json").read_text())
EXTRA_MODELS["DeepSeek-V4-Flash"] = json.loads((CONFIGS / "deepseek-ai--DeepSeek-V4-Flash.json").read_text())
SHARDS.update({"Qwen3.5-35B-A3B": 14, "Qwen3.5-397B-A17B": 94, "gpt-oss-120b": 15, "Llama-4-Scout": 50, "Llama-4-Maverick": 55,
               "DeepSeek-V4-Flash": 46})


def _qwen35_tensors(config: str = "Qwen--Qwen3.5-35B-A3B") -> dict:
    """Qwen3.5-35B-A3B: Qwen3-Next's layers under model.language_model, its routed experts fused into one 3-D
    gate_up_proj [E, 2I, H] and down_proj [E, H, I] per layer (sglang-kt qwen3_5.py:1298-1345), the mtp.* block
    (qwen3_5.py:1333 skips it). The vision tower (model.visual.*, 0.4 B parameters) is left out."""
    c = _cfg(config)
    h, vocab, e, mi = c["hidden_size"], c["vocab_size"], c["num_experts"], c["moe_intermediate_size"]
    t = {"model.language_model.embed_tokens.weight": ("BF16", (vocab, h)),
         "model.language_model.norm.weight": ("BF16", (h,))}

    def layer(p: str, full: bool) -> None:
        one = {**c, "num_experts": 0}
        _qwen3_next_layer(t, one, p, full, "BF16")
        t[f"{p}.mlp.gate.weight"] = ("BF16", (e, h))
        t[f"{p}.mlp.experts.gate_up_proj"] = ("BF16", (e, 2 * mi, h))
        t[f"{p}.mlp.experts.down_proj"] = ("BF16", (e, h, mi))

    for i in range(c["num_hidden_layers"]):
        layer(f"model.language_model.layers.{i}", (i + 1) % c["full_attention_interval"] == 0)
    t["lm_head.weight"] = ("BF16", (vocab, h))
    t["mtp.fc.weight"] = ("BF16", (h, 2 * h))
    for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        t[f"mtp.{n}.weight"] = ("BF16", (h,))
    layer("mtp.layers.0", True)
    return t


def _gpt_oss_tensors() -> dict:
    """gpt-oss-120b: MXFP4 routed experts as U8 blocks (two e2m1 per byte, 16 bytes per 32 values), U8 e8m0 scales
    per 32 and BF16 biases, gate and up fused (gpt_oss.py:721, 813-870); everything else BF16 (the config's
    modules_to_not_convert)."""
    c = EXTRA_MODELS["gpt-oss-120b"]
    h, vocab, e, mi, hd = c["hidden_size"], c["vocab_size"], c["num_local_experts"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    t = {"model.embed_tokens.weight": ("BF16", (vocab, h)), "model.norm.weight": ("BF16", (h,)),
         "lm_head.weight": ("BF16", (vocab, h))}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
        for proj, o, n in (("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)):
            t[f"{p}.self_attn.{proj}.weight"] = ("BF16", (o, n))
            t[f"{p}.self_attn.{proj}.bias"] = ("BF16", (o,))
        t[f"{p}.self_attn.sinks"] = ("BF16", (c["num_attention_heads"],))
        t[f"{p}.mlp.router.weight"] = ("BF16", (e, h))
        t[f"{p}.mlp.router.bias"] = ("BF16", (e,))
        for proj, rows, cols in (("gate_up_proj", 2 * mi, h), ("down_proj", h, mi)):
            t[f"{p}.mlp.experts.{proj}_blocks"] = ("U8", (e, rows, cols // 32, 16))
            t[f"{p}.mlp.experts.{proj}_scales"] = ("U8", (e, rows, cols // 32))
            t[f"{p}.mlp.experts.{proj}_bias"] = ("BF16", (e, rows))
    return t


def _llama4_tensors(config: str = "meta-llama--Llama-4-Scout-17B-16E-Instruct") -> dict:
    """Llama-4-Scout: every layer MoE (interleave_moe_layer_step 1), 16 routed experts fused per layer as
    feed_forward.experts.gate_up_proj [E, H, 2I] and down_proj [E, I, H] (mllama4.py:755-816), a shared expert and
    the router; BF16. The vision model is left out."""
    c = _cfg(config)
    h, vocab, e, mi, hd = c["hidden_size"], c["vocab_size"], c["num_local_experts"], c["intermediate_size"], c["head_dim"]
    step = c["interleave_moe_layer_step"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    pre = "language_model.model"
    t = {f"{pre}.embed_tokens.weight": ("BF16", (vocab, h)), f"{pre}.norm.weight": ("BF16", (h,)),
         "language_model.lm_head.weight": ("BF16", (vocab, h))}
    for i in range(c["num_hidden_layers"]):
        p = f"{pre}.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
        for proj, o, n in (("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)):
            t[f"{p}.self_attn.{proj}.weight"] = ("BF16", (o, n))
        if (i + 1) % step:  # Maverick's dense layers (llama4.py:425-428, 398-403): a plain MLP of intermediate_size_mlp
            dm = c["intermediate_size_mlp"]
            for proj, o, n in (("gate_proj", dm, h), ("up_proj", dm, h), ("down_proj", h, dm)):
                t[f"{p}.feed_forward.{proj}.weight"] = ("BF16", (o, n))
            continue
        t[f"{p}.feed_forward.router.weight"] = ("BF16", (e, h))
        for proj, o, n in (("gate_proj", mi, h), ("up_proj", mi, h), ("down_proj", h, mi)):
            t[f"{p}.feed_forward.shared_expert.{proj}.weight"] = ("BF16", (o, n))
        t[f"{p}.feed_forward.experts.gate_up_proj"] = ("BF16", (e, h, 2 * mi))
        t[f"{p}.feed_forward.experts.down_proj"] = ("BF16", (e, mi, h))
    return t


def _v4_flash_tensors() -> dict:
    """DeepSeek-V4-Flash as kt-kernel's convert_cpu_weights_ds4.py reads it: routed experts
    layers.L.ffn.experts.E.{w1,w3,w2}.{weight,scale}, FP4 (I8, two e2m1 per byte) with one F8_E8M0 scale per 32
    (deepseek_v4.py:1656-1677 maps them); the shared expert and attention FP8 with block scales, the MTP block
    mtp.0.* (skipped without speculative decoding). Attention is modelled as MLA-like projections of the config's
    ranks (q_lora_rank, o_lora_rank, head_dim): an approximation of its non-expert tensors, not its exact list."""
    c = EXTRA_MODELS["DeepSeek-V4-Flash"]
    h, vocab, e, mi = c["hidden_size"], c["vocab_size"], c["n_routed_experts"], c["moe_intermediate_size"]
    heads, hd, ql, ol = c["num_attention_heads"], c["head_dim"], c["q_lora_rank"], c["o_lora_rank"]
    t = {"embed.weight": ("BF16", (vocab, h)), "norm.weight": ("BF16", (h,)), "head.weight": ("BF16", (vocab, h))}

    def layer(p: str) -> None:
        t[f"{p}.attn_norm.weight"] = ("BF16", (h,))
        t[f"{p}.ffn_norm.weight"] = ("BF16", (h,))
        for proj, o, n in (("wq_a", ql, h), ("wq_b", heads * hd, ql), ("wkv", hd, h),
                           ("wo_a", c["o_groups"] * ol, heads * hd // c["o_groups"]), ("wo_b", h, c["o_groups"] * ol)):
            t[f"{p}.attn.{proj}.weight"] = ("F8_E4M3", (o, n))
            t[f"{p}.attn.{proj}.scale"] = ("F8_E8M0", (-(-o // 128), -(-n // 128)))
        t[f"{p}.ffn.gate.weight"] = ("BF16", (e, h))
        t[f"{p}.ffn.gate.bias"] = ("F32", (e,))
        for w, o, n in (("w1", mi, h), ("w3", mi, h), ("w2", h, mi)):
            t[f"{p}.ffn.shared_experts.{w}.weight"] = ("F8_E4M3", (o, n))
            t[f"{p}.ffn.shared_experts.{w}.scale"] = ("F8_E8M0", (-(-o // 128), -(-n // 128)))
        for x in range(e):
            for w, o, n in (("w1", mi, h), ("w3", mi, h), ("w2", h, mi)):
                t[f"{p}.ffn.experts.{x}.{w}.weight"] = ("I8", (o, n // 2))
                t[f"{p}.ffn.experts.{x}.{w}.scale"] = ("F8_E8M0", (o, n // 32))

    for i in range(c["num_hidden_layers"]):
        layer(f"layers.{i}")
    layer("mtp.0")
    return t


_BUILDERS.update({"Qwen3.5-35B-A3B": _qwen35_tensors,
                  "Qwen3.5-397B-A17B": lambda: _qwen35_tensors("Qwen--Qwen3.5-397B-A17B"), "gpt-oss-120b": _gpt_oss_tensors,
                  "Llama-4-Scout": _llama4_tensors,
                  "Llama-4-Maverick": lambda: _llama4_tensors("meta-llama--Llama-4-Maverick-17B-128E-Instruct"), "DeepSeek-V4-Flash": _v4_flash_tensors})


# -- GLM-5 (GlmMoeDsaForCausalLM): DeepSeek-V3.2's MLA + DSA indexer layout at GLM-5's sizes --------------------

EXTRA_MODELS["GLM-5-FP8"] = json.loads((CONFIGS / "zai-org--GLM-5-FP8.json").read_text())
SHARDS["GLM-5-FP8"] = 141


def _glm5_tensors() -> dict:
    """GLM-5-FP8 as published: 78 layers (3 dense) and the next-n layer 78, each DeepSeek-V3's MLA layer
    (synthetic._deepseek_layer: q_a/q_b, kv_a_proj_with_mqa, kv_b, o; FP8 with 128x128 block scales) plus the DSA
    indexer (sglang-kt glm4_moe.py GlmMoeDsaForCausalLM -> deepseek_v2's Indexer: wq_b [heads x 128, q_lora], wk
    [128, hidden] in FP8; k_norm weight/bias and `indexers_proj` [32, hidden] in BF16, the names the config's
    modules_to_not_convert lists); 256 routed experts of 2048 and one shared expert per MoE layer."""
    c = EXTRA_MODELS["GLM-5-FP8"]
    h, vocab, layers = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    t = {"model.embed_tokens.weight": ("BF16", (vocab, h)), "model.norm.weight": ("BF16", (h,)),
         "lm_head.weight": ("BF16", (vocab, h))}
    for layer in range(layers + c["num_nextn_predict_layers"]):
        synthetic._deepseek_layer(t, c, layer, "FP8", "FP8")
        p = f"model.layers.{layer}.self_attn.indexer"
        synthetic.linear(t, f"{p}.wq_b", c["index_n_heads"] * c["index_head_dim"], c["q_lora_rank"], "FP8")
        synthetic.linear(t, f"{p}.wk", c["index_head_dim"], h, "FP8")
        t[f"{p}.k_norm.weight"] = ("BF16", (c["index_head_dim"],))
        t[f"{p}.k_norm.bias"] = ("BF16", (c["index_head_dim"],))
        t[f"model.layers.{layer}.self_attn.indexers_proj.weight"] = ("BF16", (c["index_n_heads"], h))
        if layer >= layers:  # the next-n (MTP) layer's own projections, as DeepSeek-V3's
            q = f"model.layers.{layer}"
            t[f"{q}.enorm.weight"] = ("BF16", (h,))
            t[f"{q}.hnorm.weight"] = ("BF16", (h,))
            t[f"{q}.eh_proj.weight"] = ("BF16", (h, 2 * h))
            t[f"{q}.shared_head.norm.weight"] = ("BF16", (h,))
    return t


_BUILDERS["GLM-5-FP8"] = _glm5_tensors
