"""Model facts as a value: the MoE and attention shape read from config.json (by facts/model.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelFacts:
    model_type: str
    hidden_size: int
    moe_intermediate_size: int
    num_experts: int
    top_k: int
    num_layers: int
    moe_layers: tuple[int, ...]
    torch_dtype: str = "bfloat16"
    expert_naming: str = "deepseek"  # "deepseek" (mlp.experts.E.{gate,up,down}_proj) or "mixtral" (block_sparse_moe.experts.E.w1/w3/w2)
    # Attention and size facts for the memory plan (0 = not in config.json); see `attention_facts`.
    attention: str = ""  # "mla" (kv_lora_rank set) | "gqa" (MHA/GQA: num_key_value_heads) | "compressed"
    #                      (DeepSeek-V4's compressed pool) | "" unknown
    num_attention_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    v_head_dim: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    vocab_size: int = 0
    context_length: int = 0
    quant_method: str = ""  # quantization_config.quant_method: fp8, compressed-tensors, gptq, ...
    kt_moe_layers: int = 0  # MoE layers as sglang-kt counts them for --kt-num-gpu-experts (see attention_facts)
    # Memory-plan facts (0 / "" = absent): DeepSeek NSA indexer, a vision tower, FP8 block size, the architecture.
    index_head_dim: int = 0  # DeepSeek-V3.2's NSA indexer (index_head_dim when index_topk is set)
    vision_layers: int = 0  # vision_config num_hidden_layers (vt_num_hidden_layers) of a multimodal checkpoint
    vision_hidden: int = 0  # vision_config hidden_size (vt_hidden_size)
    weight_block: tuple[int, ...] = ()  # quantization_config.weight_block_size (FP8 block quantisation)
    architecture: str = ""  # architectures[0]
    # Hybrid linear attention (Qwen3-Next, Qwen3.5): per-token KV only in the full-attention layers; the linear
    # (Gated-DeltaNet) layers keep a fixed state per request instead (see resolve/memory.py `linear_state_bytes`).
    kv_layers: int = 0  # layers that hold per-token KV (0 = every layer)
    linear_layers: int = 0  # linear-attention layers (0 = none)
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 0
    linear_ssm_bytes: int = 4  # mamba_ssm_dtype: float32 unless config.json says bfloat16/float16
    # Sliding-window layers SGLang keeps in its hybrid SWA pool (Llama-4, gpt-oss: configs/model_config.py
    # is_hybrid_swa_model / get_hybrid_layer_ids): they hold swa_full_tokens_ratio x the full layers' tokens; the
    # full-attention layers are `kv_layers`. See resolve/memory.py `kv_bytes_per_token`.
    swa_layers: int = 0
    swa_kv_heads: int = 0  # swa_num_key_value_heads / swa_head_dim / swa_v_head_dim where the sliding-window layers
    swa_head_dim: int = 0  # differ (MiMo-V2-Flash; configs/model_config.py:506-515, 783-794); 0 = the full layers'
    swa_v_head_dim: int = 0
    # DeepSeek-V4's compressed attention (attention "compressed"): per-layer compress ratio (0 = sliding window only,
    # 4 or 128), the sliding window; qk_rope_head_dim / qk_nope_head_dim / index_head_dim as above.
    compress_ratios: tuple[int, ...] = ()
    window: int = 0

    @property
    def shape_key(self) -> str:
        """Identifies the MoE layer shape for caches (tuning) independent of the checkpoint path."""
        return f"{self.model_type}-h{self.hidden_size}-i{self.moe_intermediate_size}-e{self.num_experts}-k{self.top_k}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type, "hidden_size": self.hidden_size,
            "moe_intermediate_size": self.moe_intermediate_size, "num_experts": self.num_experts,
            "top_k": self.top_k, "num_layers": self.num_layers, "moe_layers": list(self.moe_layers),
            "torch_dtype": self.torch_dtype, "expert_naming": self.expert_naming,
        }
