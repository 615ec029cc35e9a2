"""The MoE architectures kt-launch plans, one row each, and the ones sglang-kt 0.7.2 serves with kt-kernel. Data only.

`SGLANG_KT_MOE_MODELS` is sglang-kt 0.7.2's own model list: every `sglang/srt/models/*.py` of the wheel whose
`EntryClass` (file:line below) builds its MoE layers with `FusedMoE`, which sglang-kt wraps in kt-kernel's
`KTEPWrapperMethod` for every model (layers/moe/kt_ep_wrapper.py:6318-6331 registers the wrapper with
layers/moe/quant_method_registry.py; fused_moe_triton/layer.py:295 applies it). Made by reading the wheel's
model files (`EntryClass = ...` and a `FusedMoE` / `get_moe_impl_class` use); tests/memory/test_day0_configs.py
checks it against the installed sglang-kt when its venv is there. A dense architecture that shares a file with a MoE one
(Ernie4_5_ForCausalLM, HunYuanDenseV1ForCausalLM, Qwen3_5ForConditionalGeneration) is listed with its file but
has no routed experts: config.json says so.

`ARCHS` is what kt-launch reads from each architecture's config.json: which keys give the routed experts, top-k,
expert width and the MoE layers (`layout`), each row cited to the sglang-kt model code it follows. An architecture
not in it is "unknown to kt-launch" (facts/model.py names it so, with the config keys that look like MoE keys).
"""

from __future__ import annotations

from dataclasses import dataclass

# (model file under sglang/srt/models/, line of its EntryClass, architectures) -- sglang-kt 0.7.2 wheel
SGLANG_KT_MOE_MODELS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("bailing_moe.py", 1056, ("BailingMoEForCausalLM", "BailingMoeForCausalLM", "BailingMoeV2ForCausalLM")),
    ("bailing_moe_linear.py", 1567, ("BailingMoeV2_5ForCausalLM",)),
    ("deepseek_v2.py", 3677, ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM")),
    ("deepseek_v4.py", 2052, ("DeepseekV4ForCausalLM",)),
    ("ernie4.py", 427, ("Ernie4_5_MoeForCausalLM", "Ernie4_5_ForCausalLM")),
    ("ernie45_vl.py", 846, ("Ernie4_5_VLMoeForConditionalGeneration",)),
    ("exaone_moe.py", 881, ("ExaoneMoEForCausalLM",)),
    ("glm4_moe.py", 1302, ("Glm4MoeForCausalLM", "GlmMoeDsaForCausalLM")),
    ("glm4_moe_lite.py", 808, ("Glm4MoeLiteForCausalLM",)),
    ("glm4v_moe.py", 285, ("Glm4vMoeForConditionalGeneration",)),
    ("gpt_oss.py", 1196, ("GptOssForCausalLM",)),
    ("granitemoe.py", 387, ("GraniteMoeForCausalLM",)),
    ("grok.py", 973, ("Grok1ForCausalLM", "Grok1ModelForCausalLM")),
    ("hunyuan.py", 816, ("HunYuanMoEV1ForCausalLM", "HunYuanDenseV1ForCausalLM")),
    ("interns1.py", 274, ("InternS1ForConditionalGeneration",)),
    ("internvl.py", 783, ("InternVLChatModel",)),
    ("kimi_linear.py", 815, ("KimiLinearForCausalLM",)),
    ("kimi_vl.py", 314, ("KimiVLForConditionalGeneration",)),
    ("lfm2_moe.py", 679, ("Lfm2MoeForCausalLM",)),
    ("llada2.py", 932, ("LLaDA2MoeModelLM",)),
    ("llama4.py", 565, ("Llama4ForCausalLM",)),
    ("longcat_flash.py", 1058, ("LongcatFlashForCausalLM",)),
    ("mimo_v2_flash.py", 1169, ("MiMoV2FlashForCausalLM",)),
    ("minimax_m2.py", 1124, ("MiniMaxM2ForCausalLM",)),
    ("minimax_m3.py", 1924, ("MiniMaxM3SparseForCausalLM",)),
    ("minimax_m3_vl.py", 395, ("MiniMaxM3SparseForConditionalGeneration",)),
    ("mixtral.py", 478, ("MixtralForCausalLM",)),
    ("mllama4.py", 1008, ("Llama4ForConditionalGeneration",)),
    ("nemotron_h.py", 863, ("NemotronHForCausalLM",)),
    ("olmoe.py", 437, ("OlmoeForCausalLM",)),
    ("phimoe.py", 559, ("PhiMoEForCausalLM",)),
    ("qwen2_moe.py", 903, ("Qwen2MoeForCausalLM",)),
    ("qwen3_5.py", 1799, ("Qwen3_5MoeForConditionalGeneration", "Qwen3_5ForConditionalGeneration")),
    ("qwen3_5_mtp.py", 347, ("Qwen3_5ForCausalLMMTP",)),
    ("qwen3_moe.py", 1181, ("Qwen3MoeForCausalLM",)),
    ("qwen3_next.py", 1148, ("Qwen3NextForCausalLM",)),
    ("qwen3_omni_moe.py", 664, ("Qwen3OmniMoeForConditionalGeneration",)),
    ("qwen3_vl_moe.py", 377, ("Qwen3VLMoeForConditionalGeneration",)),
    ("sdar_moe.py", 746, ("SDARMoeForCausalLM",)),
    ("step3_vl.py", 1003, ("Step3VLForConditionalGeneration",)),
    ("step3p5.py", 1037, ("Step3p5ForCausalLM",)),
)


def sglang_kt_model_file(architecture: str) -> str | None:
    """`sglang/srt/models/FILE.py:LINE` where sglang-kt 0.7.2 builds this architecture with FusedMoE, or None."""
    for f, line, names in SGLANG_KT_MOE_MODELS:
        if architecture in names:
            return f"sglang/srt/models/{f}:{line}"
    return None


@dataclass(frozen=True)
class Arch:
    """What one architecture's config.json gives kt-launch. Keys are read in order (the first one set wins); a
    per-layer list (Hunyuan's `moe_topk`, `moe_intermediate_size`) must hold one value for every MoE layer.

    layout (which layers are MoE): "first_k_dense" (first_k_dense_replace, moe_layer_freq), "sparse_step"
    (decoder_sparse_step, mlp_only_layers), "start_end" (moe_layer_start_index..moe_layer_end_index every
    moe_layer_interval), "interleave" ((i + 1) % interleave_moe_layer_step == 0), "all" (every layer)."""

    names: tuple[str, ...]
    experts: tuple[str, ...]
    top_k: tuple[str, ...]
    inter: tuple[str, ...]
    layout: str
    cite: str
    tensors: str = "model.layers.L.mlp.experts.E.{gate,up,down}_proj.<suffix>"  # routed-expert tensor names
    formats: str = "BF16 weight; FP8 weight + F32 weight_scale_inv (128x128 blocks)"  # dtypes and scales
    kv: str = "every layer: num_key_value_heads x (head_dim + v_head_dim)"  # what SGLang keeps per token (cited)


ARCHS: tuple[Arch, ...] = (
    Arch(("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM", "DeepseekV4ForCausalLM",
          "KimiK25ForConditionalGeneration", "Glm4MoeForCausalLM", "GlmMoeDsaForCausalLM",
          "KimiVLForConditionalGeneration",
          "MiMoV2FlashForCausalLM"),
         ("n_routed_experts",), ("num_experts_per_tok",), ("moe_intermediate_size",), "first_k_dense",
         "deepseek_v2.py:2924-2929 _is_layer_sparse (first_k_dense_replace, moe_layer_freq); DeepSeek-V4's hash "
         "layers hold routed experts too (kt_ep_wrapper.py:4546-4560, num_hash_layers)",
         "model.layers.L.mlp.experts.E.{gate,up,down}_proj.*; DeepSeek-V4: layers.L.ffn.experts.E.{w1,w3,w2}.{weight,"
         "scale} (deepseek_v4.py:1656-1677 renames ffn -> mlp, w1/w3/w2 -> gate/up/down, scale -> weight_scale_inv)",
         "BF16; FP8 + F32 weight_scale_inv; compressed-tensors INT4 weight_packed (I32) + BF16 weight_scale (group "
         "32); DeepSeek-V4 FP4 (I8, two e2m1 per byte) + F8_E8M0 scale per 32",
         "MLA: kv_lora_rank + qk_rope_head_dim per layer (mem_cache/memory_pool.py:1414-1418); DeepSeek-V3.2 / GLM-5 "
         "(index_topk set) add the NSA indexer's index_head_dim + 4 per 128 (memory_pool.py:1792-1817); DeepSeek-V4: "
         "its compressed pool per full token, sliding window of every layer at swa_full_tokens_ratio 0.1 plus c4 / "
         "c128 compressed KV, indexer and states (model_executor/memory_profiler.py:64-101); MiMo-V2-Flash: "
         "hybrid_layer_pattern's sliding-window layers (own swa_* heads) at swa_full_tokens_ratio 0.8 "
         "(configs/model_config.py:1514-1520); next-n / mtp.* layers only with speculative decoding"),
    Arch(("Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "Qwen3NextForCausalLM", "Qwen3_5MoeForConditionalGeneration",
          "Qwen3VLMoeForConditionalGeneration"),
         ("num_experts",), ("num_experts_per_tok",), ("moe_intermediate_size",), "sparse_step",
         "qwen3_moe.py:719 / qwen3_next.py:480: every layer is sparse (is_layer_sparse = True); the published "
         "configs' decoder_sparse_step 1 and mlp_only_layers [] say the same (transformers' rule)",
         "model.layers.L.mlp.experts.E.{gate,up,down}_proj.*; Qwen3.5: model.language_model.layers.L.mlp.experts."
         "{gate_up_proj [E, 2I, H], down_proj [E, H, I]} (qwen3_5.py:1298-1345 fused_expert_params_mapping); "
         "Qwen3-Next / Qwen3.5 mtp.* not loaded without speculative decoding (qwen3_next.py:1041, qwen3_5.py:1333)",
         "BF16; FP8 + F32 weight_scale_inv (128x128 blocks)",
         "Qwen3-Next / Qwen3.5: only the full-attention layers ((i + 1) % full_attention_interval == 0, "
         "configs/qwen3_next.py:255-282) hold per-token KV; the Gated-DeltaNet layers a state per request "
         "(configs/mamba_utils.py mamba_cache_per_req, mamba_full_memory_ratio 0.9); other rows: every layer"),
    Arch(("MixtralForCausalLM", "MiniMaxM2ForCausalLM", "GptOssForCausalLM"),
         ("num_local_experts",), ("num_experts_per_tok",), ("intermediate_size",), "all",
         "mixtral.py MixtralMoE, minimax_m2.py, gpt_oss.py GptOssSparseMoeBlock: every layer (intermediate_size)",
         "model.layers.L.block_sparse_moe.experts.E.{w1,w3,w2}.*; gpt-oss: model.layers.L.mlp.experts."
         "{gate_up_proj,down_proj}_{blocks,scales,bias} (gpt_oss.py:721, 813-870)",
         "BF16; FP8 + F32 weight_scale_inv; gpt-oss MXFP4: U8 blocks [E, rows, cols/32, 16] + U8 (e8m0) scales per 32 "
         "+ BF16 bias",
         "every layer; gpt-oss: its layer_types' sliding_attention layers at swa_full_tokens_ratio (0.8) of the full "
         "layers' tokens (configs/model_config.py:1479-1513, model_runner_kv_cache_mixin.py:410-470)"),
    Arch(("Llama4ForConditionalGeneration", "Llama4ForCausalLM"),
         ("num_local_experts",), ("num_experts_per_tok",), ("intermediate_size",), "interleave",
         "llama4.py:425-428 _is_moe_layer: (layer_id + 1) % interleave_moe_layer_step == 0; Llama4MoE uses "
         "intermediate_size (intermediate_size_mlp is the dense layers')",
         "language_model.model.layers.L.feed_forward.experts.{gate_up_proj [E, H, 2I], down_proj [E, I, H]} "
         "(mllama4.py:755-816)", "BF16",
         "Llama4ForConditionalGeneration: the (i + 1) % 4 != 0 layers (chunked attention) at swa_full_tokens_ratio "
         "(0.8) of the full layers' tokens (configs/model_config.py:1499-1505); Llama4ForCausalLM: every layer"),
    Arch(("Ernie4_5_MoeForCausalLM",),
         ("moe_num_experts",), ("moe_k",), ("moe_intermediate_size",), "start_end",
         "ernie4.py:89-98 (moe_num_experts, moe_k), :176-186 (moe_layer_start_index <= i <= moe_layer_end_index and "
         "(i - start) % moe_layer_interval == 0)",
         "model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight; model.mtp_* not loaded (ernie4.py:365-375)", "BF16"),
    Arch(("HunYuanMoEV1ForCausalLM",),
         ("num_experts",), ("moe_topk",), ("moe_intermediate_size",), "all",
         "hunyuan.py:135-149 (moe_topk, moe_intermediate_size: an int or one per layer), :60-67 and the decoder "
         "layer's `if _is_moe(config)` (every layer is MoE)",
         "model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight (hunyuan.py:666-672)", "BF16"),
)


def arch_of(architecture: str) -> Arch | None:
    return next((a for a in ARCHS if architecture in a.names), None)
