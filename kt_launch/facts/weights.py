"""Checkpoint bytes by role, from the safetensors headers preflight already holds in memory (no file is read here).

Routed-expert bytes come from `ExpertSet.layer_bytes` (the rows `artifacts.hf_experts` scanned); the non-expert
tensors are found by splitting each header at entry boundaries and skipping the expert entries, so the ~100k
expert entries of a DeepSeek-V3 checkpoint are not parsed twice. How tensor parallelism stores each non-expert
tensor follows SGLang's DeepSeek-V2/V3 and Qwen3-MoE modules (deepseek_v2.py: `fused_qkv_a_proj_with_mqa` /
`kv_a_proj_with_mqa` and the router `gate` are ReplicatedLinear, norms are replicated; q/kv_b/o projections,
embeddings, lm_head, dense and shared-expert MLPs are column/row/vocab parallel). GQA k/v projections keep
max(1, kv_heads // tp) heads per rank (model_config.py:774-781). Replicated on every rank too: DeepSeek-V3.2's NSA
indexer (layers/attention/nsa/nsa_indexer.py:187-209: wq_b, wk, weights_proj are ReplicatedLinear, k_norm a
LayerNorm) and Kimi-K2.5's vision tower and mm_projector (models/kimi_k25.py:557-567 ReplicatedLinear; the tower
imports no parallel layer).
"""

from __future__ import annotations

import re

from kt_launch.core.memory import WeightBytes
from kt_launch.core.artifacts import ModelDirFacts
from kt_launch.core.fileid import FileId
from kt_launch.facts.model import ModelFacts

_LAYER_ENTRY = re.compile(rb'(?<!mtp\.)layers\.(\d+)\.'
                          rb'(?!mlp\.experts\.|block_sparse_moe\.experts\.|ffn\.experts\.|feed_forward\.experts\.)'
                          rb'([^"]+)":\{"dtype":"(\w+)",'
                          rb'"shape":\[[\d,]*\],"data_offsets":\[(\d+),(\d+)\]')
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_REPLICATED = re.compile(r"(?:norm\.(?:weight|bias)$|\.mlp\.gate\.weight$|\.gate\.e_score_correction_bias$|"
                         r"\.kv_a_proj_with_mqa\.|\.q_a_proj\.|\.(?:q|k)_norm\.|\.self_attn\.indexer\.|"
                         r"^(?:vision_tower|mm_projector)\.)")
# Tensors outside the decoder layers that are not sharded: the vision tower and projector of a multimodal model.
_TOWER_ENTRY = re.compile(rb'"((?:vision_tower|mm_projector)\.[^"]+)":\{"dtype":"(\w+)",'
                          rb'"shape":\[[\d,]*\],"data_offsets":\[(\d+),(\d+)\]')
_KV_PROJ = re.compile(r"\.self_attn\.(?:k_proj|v_proj)\.")
# Multi-token-prediction blocks SGLang does not load without speculative decoding: Qwen3-Next / Qwen3.5 `mtp.*`
# (sglang-kt qwen3_next.py:1041 `if not is_mtp and "mtp" in name: continue`, qwen3_5.py:1333), ERNIE-4.5
# `model.mtp_*` (ernie4.py:375). DeepSeek's next-n layer is a layer >= num_hidden_layers (skipped above).
_MTP_ENTRY = re.compile(rb'"((?:mtp\.|model\.mtp_)[^"]*)":\{"dtype":"(\w+)","shape":\[[\d,]*\],'
                        rb'"data_offsets":\[(\d+),(\d+)\]')
MTP_NAME = re.compile(r"^(?:mtp\.|model\.mtp_)")


def weight_bytes(md: ModelDirFacts | None, model: ModelFacts | None) -> WeightBytes | None:
    """WeightBytes of model.path, or None when its shards were not read (missing dir, no valid shard)."""
    if md is None or model is None:
        return None
    shards = [s for s in md.shards if isinstance(s, FileId) and s.ok_safetensors]
    if not shards:
        return None
    skipped = 0
    by_layer: dict[int, int] = {}
    for layer, n in md.experts.layer_bytes.items():
        if layer < model.num_layers:
            by_layer[layer] = n
        else:
            skipped += n
    repl = shard = kvp = count = 0
    by_dtype: dict[str, int] = {}
    for name, dtype, n in _nonexpert_entries(shards, md.experts.nbytes):
        count += 1
        m = _LAYER.search(name)
        if (m and int(m[1]) >= model.num_layers) or MTP_NAME.match(name):
            skipped += n
            continue
        by_dtype[dtype] = by_dtype.get(dtype, 0) + n
        if _REPLICATED.search(name):
            repl += n
        elif model.attention == "gqa" and _KV_PROJ.search(name):
            kvp += n
        else:
            shard += n
    exp_dtype: dict[str, int] = {}
    for (layer, dtype), n in md.experts.layer_dtype_bytes.items():
        if layer < model.num_layers:
            exp_dtype[dtype] = exp_dtype.get(dtype, 0) + n
    return WeightBytes(by_layer, dict(sorted(exp_dtype.items())), dict(sorted(by_dtype.items())), repl, shard, kvp,
                       skipped, count + md.experts.count, md.path)


def _nonexpert_entries(shards: list[FileId], experts_bytes: int):
    """(name, dtype, bytes) of every tensor whose name has no `.experts.`.

    Layer tensors are found by a regex with the literal prefix `layers.` (the expert entries fail at once on the
    lookahead), which costs about a fifth of splitting the header into entries. What is left of the data sections
    (they tile exactly: safetensors refuses holes) is the handful of tensors outside the layers (embeddings,
    final norm, lm_head), reported as one sharded row."""
    found = 0
    data = 0
    for fid in shards:
        hdr = fid.header
        data += fid.data_bytes
        if b'":{"dtype":"' in hdr:  # the compact layout every safetensors writer emits
            for m in _LAYER_ENTRY.finditer(hdr):
                n = int(m[5]) - int(m[4])
                found += n
                yield "layers." + m[1].decode() + "." + m[2].decode("utf-8", "replace"), m[3].decode(), n
            if b'"mtp.' in hdr or b'"model.mtp_' in hdr:
                for m in _MTP_ENTRY.finditer(hdr):
                    n = int(m[4]) - int(m[3])
                    found += n
                    yield m[1].decode("utf-8", "replace"), m[2].decode(), n
            if b'vision_tower.' in hdr or b'mm_projector.' in hdr:
                for m in _TOWER_ENTRY.finditer(hdr):
                    n = int(m[4]) - int(m[3])
                    found += n
                    yield m[1].decode("utf-8", "replace"), m[2].decode(), n
            continue
        try:
            tensors = fid.tensors
        except (ValueError, KeyError, TypeError):
            continue  # not JSON after all: preflight reports the shard
        for n, t in tensors.items():
            if ".experts." not in n and (_LAYER.search(n) or n.startswith(("vision_tower.", "mm_projector."))):
                found += t.nbytes
                yield n, t.dtype, t.nbytes
    rest = data - experts_bytes - found
    if rest > 0:
        yield "(outside the layers: embeddings, final norm, lm_head)", "other", rest
