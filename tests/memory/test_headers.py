"""Checkpoint bytes by role, summed from real safetensors headers, against the published shapes."""

import math

import pytest

from devtools import synthetic
from kt_launch.facts.artifacts import _Cache, model_dir_facts
from kt_launch.core.fileid import tensor_nbytes
from kt_launch.facts.model import read_model_facts
from kt_launch.facts.weights import weight_bytes
from kt_launch.resolve.memory import kv_bytes_per_token, nonexpert_share


def facts(path):
    model = read_model_facts(str(path))
    return model, weight_bytes(model_dir_facts(str(path), _Cache()), model)


def expected(name, num_layers):
    """(experts, non-experts, skipped) bytes from the tensor list the shards were written from."""
    exp = non = skipped = 0
    for tname, (dtype, shape) in synthetic.real_tensors(name).items():
        n = tensor_nbytes(dtype, shape)
        layer = int(tname.split(".")[2]) if tname.startswith("model.layers.") else -1
        if layer >= num_layers:
            skipped += n
        elif ".experts." in tname:
            exp += n
        else:
            non += n
    return exp, non, skipped


def test_deepseek_v2_lite_bf16(models):
    model, w = facts(models("DeepSeek-V2-Lite"))
    # 26 MoE layers x 64 experts x (gate, up, down) of 2048 x 1408, BF16 (model-shapes.md: 14.39 B params)
    assert w.expert_bytes == 26 * 64 * 3 * 2048 * 1408 * 2
    assert sorted(w.expert_by_layer) == list(range(1, 27))
    assert w.expert_by_dtype == {"BF16": w.expert_bytes}
    exp, non, skipped = expected("DeepSeek-V2-Lite", 27)
    assert (w.expert_bytes, w.nonexpert_bytes, w.skipped_bytes) == (exp, non, 0)
    # replicated on every rank: norms, router gates, the MLA latent down-projection kv_a_proj_with_mqa
    per_layer_repl = 2 * 2048 * 2 + 512 * 2 + 576 * 2048 * 2
    # (the final model.norm, outside the layers, is counted with the sharded embeddings: 4 KiB)
    assert w.replicated_bytes == 27 * per_layer_repl + 26 * 64 * 2048 * 2
    assert w.kv_proj_bytes == 0  # MLA has no k/v projections


def test_deepseek_v3_fp8_with_block_scales_and_mtp_layer(models):
    model, w = facts(models("DeepSeek-V3"))
    scale = lambda o, i: 4 * math.ceil(o / 128) * math.ceil(i / 128)  # noqa: E731  F32 128x128 block scales
    one_expert = 3 * 7168 * 2048 + 2 * scale(2048, 7168) + scale(7168, 2048)
    assert w.expert_bytes == 58 * 256 * one_expert  # layers 3..60; the MTP layer 61 is not loaded
    assert w.expert_by_dtype == {"F8_E4M3": 58 * 256 * 3 * 7168 * 2048,
                                 "F32": 58 * 256 * (2 * scale(2048, 7168) + scale(7168, 2048))}
    exp, non, skipped = expected("DeepSeek-V3", 61)
    assert (w.expert_bytes, w.nonexpert_bytes, w.skipped_bytes) == (exp, non, skipped)
    assert skipped > 256 * one_expert + 2 * 129280 * 7168 * 2  # layer 61's experts, embedding and head
    assert max(w.expert_by_layer) == 60
    assert model.kt_moe_layers == 58 and model.attention == "mla"


def test_qwen3_30b_a3b_bf16_gqa(models):
    model, w = facts(models("Qwen3-30B-A3B"))
    assert w.expert_bytes == 48 * 128 * 3 * 2048 * 768 * 2
    assert w.kv_proj_bytes == 48 * 2 * (4 * 128) * 2048 * 2
    exp, non, skipped = expected("Qwen3-30B-A3B", 48)
    assert (w.expert_bytes, w.nonexpert_bytes, w.skipped_bytes) == (exp, non, 0)
    assert (model.attention, model.num_kv_heads, model.head_dim) == ("gqa", 4, 128)


@pytest.mark.parametrize("name,tp,per_token", [
    ("DeepSeek-V2-Lite", 1, (512 + 64) * 27 * 2),  # MLA: kv_lora_rank + qk_rope_head_dim per layer
    ("DeepSeek-V2-Lite", 8, (512 + 64) * 27 * 2),  # replicated on every rank
    ("DeepSeek-V3", 1, (512 + 64) * 61 * 2),
    ("DeepSeek-V3", 8, (512 + 64) * 61 * 2),
    ("Qwen3-30B-A3B", 1, 4 * (128 + 128) * 48 * 2),  # GQA: kv_heads x (head_dim + v_head_dim)
    ("Qwen3-30B-A3B", 2, 2 * (128 + 128) * 48 * 2),
    ("Qwen3-30B-A3B", 8, 1 * (128 + 128) * 48 * 2),  # TP 8 > 4 KV heads: each rank still keeps one head
])
def test_kv_bytes_per_token(models, name, tp, per_token):
    model, _ = facts(models(name))
    assert kv_bytes_per_token(model, tp) == per_token


def test_tp_split_of_non_expert_weights(models):
    model, w = facts(models("Qwen3-30B-A3B"))
    for tp in (1, 2, 4, 8):
        kv_share = w.kv_proj_bytes * max(1, 4 // tp) // 4  # a rank keeps max(1, kv_heads // tp) of 4 heads
        assert nonexpert_share(w, model, tp) == w.replicated_bytes + math.ceil(w.sharded_bytes / tp) + kv_share
    assert nonexpert_share(w, model, 8) == nonexpert_share(w, model, 4) - math.ceil(w.sharded_bytes / 4) \
        + math.ceil(w.sharded_bytes / 8)  # beyond 4 KV heads only the sharded part shrinks
