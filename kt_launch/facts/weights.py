"""Checkpoint bytes by role, from the safetensors headers preflight already holds in memory (no file is read here).

Routed-expert bytes come from `ExpertSet.layer_bytes` (the rows `artifacts.hf_experts` scanned); the non-expert
tensors are found by splitting each header at entry boundaries and skipping the expert entries, so the ~100k
expert entries of a DeepSeek-V3 checkpoint are not parsed twice. How tensor parallelism stores each non-expert
tensor follows SGLang's DeepSeek-V2/V3 and Qwen3-MoE modules (deepseek_v2.py: `fused_qkv_a_proj_with_mqa` /
`kv_a_proj_with_mqa` and the router `gate` are ReplicatedLinear, norms are replicated; q/kv_b/o projections,
embeddings, lm_head, dense and shared-expert MLPs are column/row/vocab parallel). GQA k/v projections keep
max(1, kv_heads // tp) heads per rank (model_config.py:774-781).
"""

from __future__ import annotations

import re

from kt_launch.core.memory import WeightBytes
from kt_launch.facts.artifacts import ModelDirFacts
from kt_launch.facts.fileid import FileId
from kt_launch.facts.model import ModelFacts

_ENTRY = re.compile(rb'"?([^"]+)":\{"dtype":"(\w+)","shape":\[[\d,]*\],"data_offsets":\[(\d+),(\d+)\]')
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_REPLICATED = re.compile(r"(?:norm\.(?:weight|bias)$|\.mlp\.gate\.weight$|\.gate\.e_score_correction_bias$|"
                         r"\.kv_a_proj_with_mqa\.|\.q_a_proj\.|\.(?:q|k)_norm\.)")
_KV_PROJ = re.compile(r"\.self_attn\.(?:k_proj|v_proj)\.")


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
    for name, dtype, n in _nonexpert_entries(shards):
        count += 1
        m = _LAYER.search(name)
        if m and int(m[1]) >= model.num_layers:
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


def _nonexpert_entries(shards: list[FileId]):
    """(name, dtype, bytes) of every tensor whose name has no `.experts.`."""
    for fid in shards:
        hdr = fid.header
        rows = None
        if b'":{"dtype":"' in hdr:  # the compact layout every safetensors writer emits
            rows = []
            for part in hdr.split(b'},"'):
                if b".experts." in part or b'"dtype"' not in part:
                    continue
                m = _ENTRY.search(part)
                if m is None:
                    rows = None  # an unusual entry: parse this shard's header fully
                    break
                rows.append((m[1].decode("utf-8", "replace"), m[2].decode(), int(m[4]) - int(m[3])))
        if rows is None:
            try:
                tensors = fid.tensors
            except (ValueError, KeyError, TypeError):
                continue  # not JSON after all: preflight reports the shard
            rows = [(n, t.dtype, t.nbytes) for n, t in tensors.items() if ".experts." not in n]
        yield from rows
