"""Tiny real checkpoints for tests and `make demo`, written by hand: no torch, no safetensors package. A dev module
of the checkout (devtools/), not of the wheel: kt-launch ships no test fixtures.

- safetensors: 8-byte little-endian header length + JSON header (space-padded to 8) + raw bytes;
  `sparse=True` leaves the data as a hole (truncate), for benchmarks of huge shapes.
- torch.save-like zip archives (`archive/data.pkl`, `archive/data/0`, `archive/version`) whose pickle
  holds plain dicts and tuples only: identified as torch by content, not loadable as tensors.
- PEFT adapter dirs (`adapter_config.json` + `adapter_model.safetensors`).

`python devtools/synthetic.py DIR [--quiet]` (what `make demo` runs) builds the demo tree that `configs/demo.yaml`
points at: DIR/model (DeepSeek-V2-shaped HF dir), DIR/kt-amxint8, DIR/moe_lora.pt, DIR/lora.
`BROKEN` maps the name of every broken variant to a builder that returns a profile dict.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from kt_launch.core.fileid import DTYPE_BYTES


@dataclass(frozen=True)
class Shape:
    """A DeepSeek-V2-shaped MoE, tiny by default."""

    layers: int = 4
    first_dense: int = 1
    experts: int = 8
    top_k: int = 2
    hidden: int = 128  # kt-kernel tiles: AMXINT4 needs hidden % 128 (core/methods.py)
    moe_inter: int = 256  # AMXINT4 needs moe_intermediate % (128 x pools): up to 2 pools (core/methods.py)
    inter: int = 128
    vocab: int = 256
    model_type: str = "deepseek_v2"

    @property
    def moe_layers(self) -> list[int]:
        return list(range(self.first_dense, self.layers))

    def config(self) -> dict:
        arch = "DeepseekV3ForCausalLM" if self.model_type == "deepseek_v3" else "DeepseekV2ForCausalLM"
        return {
            "architectures": [arch], "model_type": self.model_type, "hidden_size": self.hidden,
            "intermediate_size": self.inter, "moe_intermediate_size": self.moe_inter,
            "num_hidden_layers": self.layers, "first_k_dense_replace": self.first_dense, "moe_layer_freq": 1,
            "n_routed_experts": self.experts, "n_shared_experts": 2, "num_experts_per_tok": self.top_k,
            "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": self.vocab, "torch_dtype": "bfloat16",
            # DeepSeek-V2/V3 are MLA architectures: SGLang sizes their KV cache by these (kt-launch refuses one
            # without kv_lora_rank)
            "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
        }


TINY = Shape()
DEEPSEEK_V3 = Shape(layers=61, first_dense=3, experts=256, top_k=8, hidden=7168, moe_inter=2048, inter=18432,
                    vocab=129280, model_type="deepseek_v3")


# -- writers ---------------------------------------------------------------------------------

def nbytes(dtype: str, shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return int(n * DTYPE_BYTES[dtype])


def safetensors_bytes_header(tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict | None = None):
    """(header bytes incl. the 8-byte length, data length)."""
    hdr: dict = {"__metadata__": metadata or {"format": "pt"}}
    off = 0
    for name, (dtype, shape) in tensors.items():
        n = nbytes(dtype, shape)
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, off


def write_safetensors(path: str | Path, tensors: dict[str, tuple[str, tuple[int, ...]]], sparse: bool = False,
                      metadata: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head, data_len = safetensors_bytes_header(tensors, metadata)
    with open(path, "wb") as f:
        f.write(head)
        if sparse:
            f.truncate(len(head) + data_len)
        else:
            f.write(bytes(data_len))
    return path


def write_torch_zip(path: str | Path, obj, blobs: Iterable[bytes] = (b"\0" * 64,)) -> Path:
    """A zip laid out like torch.save's: archive/data.pkl (pickle protocol 2 of plain data), data/N, version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/byteorder", "little")
        for i, b in enumerate(blobs):
            z.writestr(f"archive/data/{i}", b)
        z.writestr("archive/version", "3\n")
    return path


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


# -- builders --------------------------------------------------------------------------------

def hf_model(root: str | Path, shape: Shape = TINY, expert_dtype: str = "BF16", experts: bool = True,
             shards: int = 2, sparse: bool = False, skip_layers: Iterable[int] = ()) -> Path:
    """A DeepSeek-shaped HF dir: config.json, model.safetensors.index.json and `shards` shards."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", shape.config())
    h, i, mi = shape.hidden, shape.inter, shape.moe_inter
    per_layer: list[dict[str, tuple[str, tuple[int, ...]]]] = []
    for layer in range(shape.layers):
        t: dict[str, tuple[str, tuple[int, ...]]] = {}
        p = f"model.layers.{layer}"
        t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
        for proj in ("q_proj", "kv_a_proj_with_mqa", "o_proj"):
            t[f"{p}.self_attn.{proj}.weight"] = ("BF16", (h, h))
        if layer < shape.first_dense:
            for proj, dims in (("gate_proj", (i, h)), ("up_proj", (i, h)), ("down_proj", (h, i))):
                t[f"{p}.mlp.{proj}.weight"] = ("BF16", dims)
        else:
            t[f"{p}.mlp.gate.weight"] = ("BF16", (shape.experts, h))
            for proj, dims in (("gate_proj", (2 * mi, h)), ("up_proj", (2 * mi, h)), ("down_proj", (h, 2 * mi))):
                t[f"{p}.mlp.shared_experts.{proj}.weight"] = ("BF16", dims)
            if experts and layer not in skip_layers:
                for e in range(shape.experts):
                    for proj, dims in (("gate_proj", (mi, h)), ("up_proj", (mi, h)), ("down_proj", (h, mi))):
                        t[f"{p}.mlp.experts.{e}.{proj}.weight"] = (expert_dtype, dims)
                        if expert_dtype.startswith("F8"):
                            t[f"{p}.mlp.experts.{e}.{proj}.weight_scale_inv"] = (
                                "F32", (-(-dims[0] // 128), -(-dims[1] // 128)))
        per_layer.append(t)
    head = {"model.embed_tokens.weight": ("BF16", (shape.vocab, h)), "model.norm.weight": ("BF16", (h,)),
            "lm_head.weight": ("BF16", (shape.vocab, h))}
    flat = list(head.items()) + [kv for t in per_layer for kv in t.items()]
    groups: list[dict] = [dict(flat[k * len(flat) // shards:(k + 1) * len(flat) // shards]) for k in range(shards)]
    weight_map = {}
    for k, g in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(root / name, g, sparse=sparse)
        weight_map.update({t: name for t in g})
    total = sum(nbytes(d, s) for g in groups for d, s in g.values())
    write_json(root / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    return root


# -- real models: config.json and the full tensor list, for the memory plan's tests and benchmarks --------

# config.json values as published (the keys SGLang and kt-launch read); `weights` names the checkpoint format.
REAL_MODELS: dict[str, dict] = {
    "DeepSeek-V2-Lite": {
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": 2048,
        "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 27,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_routed_experts": 64, "n_shared_experts": 2,
        "num_experts_per_tok": 6, "num_attention_heads": 16, "num_key_value_heads": 16, "q_lora_rank": None,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 102400, "max_position_embeddings": 163840, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "topk_method": "greedy"},
    "DeepSeek-V3": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
        "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
        "first_k_dense_replace": 3, "moe_layer_freq": 1, "n_routed_experts": 256, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 129280, "max_position_embeddings": 163840, "num_nextn_predict_layers": 1,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "topk_method": "noaux_tc",
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [128, 128]}},
    "Kimi-K2-Thinking": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2", "hidden_size": 7168,
        "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_routed_experts": 384, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "num_attention_heads": 64, "num_key_value_heads": 64, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 163840, "max_position_embeddings": 262144, "num_nextn_predict_layers": 0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "topk_method": "noaux_tc",
        "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 32,
                                                                          "symmetric": True, "type": "int"}}}}},
    "Qwen3-30B-A3B": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
        "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_experts": 128,
        "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [], "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "norm_topk_prob": True},
}
# Routed-expert format per model: BF16, FP8 (block-128 weight_scale_inv) or INT4 (compressed-tensors, group 32).
REAL_FORMATS = {"DeepSeek-V2-Lite": "BF16", "DeepSeek-V3": "FP8", "Kimi-K2-Thinking": "INT4", "Qwen3-30B-A3B": "BF16"}

Tensors = dict[str, tuple[str, tuple[int, ...]]]


def linear(t: Tensors, name: str, out: int, inp: int, fmt: str) -> None:
    """One Linear weight in a checkpoint format: BF16; FP8 + F32 128x128 block scales; INT4 compressed-tensors."""
    if fmt == "FP8":
        t[f"{name}.weight"] = ("F8_E4M3", (out, inp))
        t[f"{name}.weight_scale_inv"] = ("F32", (-(-out // 128), -(-inp // 128)))
    elif fmt == "INT4":
        t[f"{name}.weight_packed"] = ("I32", (out, inp // 8))
        t[f"{name}.weight_scale"] = ("BF16", (out, inp // 32))
        t[f"{name}.weight_shape"] = ("I32", (2,))
    else:
        t[f"{name}.weight"] = ("BF16", (out, inp))


def _deepseek_layer(t: Tensors, c: dict, layer: int, fmt: str, expert_fmt: str) -> None:
    p, h = f"model.layers.{layer}", c["hidden_size"]
    heads, nope, rope, v = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
    if c.get("q_lora_rank"):
        linear(t, f"{p}.self_attn.q_a_proj", c["q_lora_rank"], h, fmt)
        t[f"{p}.self_attn.q_a_layernorm.weight"] = ("BF16", (c["q_lora_rank"],))
        linear(t, f"{p}.self_attn.q_b_proj", heads * (nope + rope), c["q_lora_rank"], fmt)
    else:
        linear(t, f"{p}.self_attn.q_proj", heads * (nope + rope), h, fmt)
    linear(t, f"{p}.self_attn.kv_a_proj_with_mqa", c["kv_lora_rank"] + rope, h, fmt)
    t[f"{p}.self_attn.kv_a_layernorm.weight"] = ("BF16", (c["kv_lora_rank"],))
    linear(t, f"{p}.self_attn.kv_b_proj", heads * (nope + v), c["kv_lora_rank"], fmt)
    linear(t, f"{p}.self_attn.o_proj", h, heads * v, fmt)
    t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
    if layer < c["first_k_dense_replace"]:
        for proj, o, i in (("gate_proj", c["intermediate_size"], h), ("up_proj", c["intermediate_size"], h),
                           ("down_proj", h, c["intermediate_size"])):
            linear(t, f"{p}.mlp.{proj}", o, i, fmt)
        return
    e, mi, sh = c["n_routed_experts"], c["moe_intermediate_size"], c["n_shared_experts"] * c["moe_intermediate_size"]
    t[f"{p}.mlp.gate.weight"] = ("BF16", (e, h))
    if c.get("topk_method") == "noaux_tc":
        t[f"{p}.mlp.gate.e_score_correction_bias"] = ("F32", (e,))
    for proj, o, i in (("gate_proj", sh, h), ("up_proj", sh, h), ("down_proj", h, sh)):
        linear(t, f"{p}.mlp.shared_experts.{proj}", o, i, fmt)
    for x in range(e):
        for proj, o, i in (("gate_proj", mi, h), ("up_proj", mi, h), ("down_proj", h, mi)):
            linear(t, f"{p}.mlp.experts.{x}.{proj}", o, i, expert_fmt)


def qwen3_moe_layer(t: Tensors, c: dict, layer: int) -> None:
    p, h, hd = f"model.layers.{layer}", c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    t[f"{p}.input_layernorm.weight"] = ("BF16", (h,))
    for proj, o, i in (("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)):
        t[f"{p}.self_attn.{proj}.weight"] = ("BF16", (o, i))
    t[f"{p}.self_attn.q_norm.weight"] = ("BF16", (hd,))
    t[f"{p}.self_attn.k_norm.weight"] = ("BF16", (hd,))
    t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (h,))
    t[f"{p}.mlp.gate.weight"] = ("BF16", (c["num_experts"], h))
    mi = c["moe_intermediate_size"]
    for x in range(c["num_experts"]):
        for proj, o, i in (("gate_proj", mi, h), ("up_proj", mi, h), ("down_proj", h, mi)):
            t[f"{p}.mlp.experts.{x}.{proj}.weight"] = ("BF16", (o, i))


def real_tensors(name: str) -> Tensors:
    """The full tensor list of a published checkpoint (names, dtypes, shapes), MTP/next-n layers included."""
    c, fmt = REAL_MODELS[name], REAL_FORMATS[name]
    h, vocab, layers = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (vocab, h)), "model.norm.weight": ("BF16", (h,))}
    if c["model_type"] == "qwen3_moe":
        for layer in range(layers):
            qwen3_moe_layer(t, c, layer)
    else:
        dense_fmt = "FP8" if fmt == "FP8" else "BF16"  # Kimi-K2-Thinking: only routed experts are INT4
        for layer in range(layers + c.get("num_nextn_predict_layers", 0)):
            _deepseek_layer(t, c, layer, dense_fmt, fmt)
            if layer >= layers:  # DeepSeek-V3's MTP layer: its own embedding, projections and head
                p = f"model.layers.{layer}"
                t[f"{p}.embed_tokens.weight"] = ("BF16", (vocab, h))
                t[f"{p}.enorm.weight"] = ("BF16", (h,))
                t[f"{p}.hnorm.weight"] = ("BF16", (h,))
                t[f"{p}.eh_proj.weight"] = ("BF16", (h, 2 * h))
                t[f"{p}.shared_head.norm.weight"] = ("BF16", (h,))
                t[f"{p}.shared_head.head.weight"] = ("BF16", (vocab, h))
    if not c.get("tie_word_embeddings"):
        t["lm_head.weight"] = ("BF16", (vocab, h))
    return t


def real_model(root: str | Path, name: str, shards: int = 8, sparse: bool = True) -> Path:
    """A real model's HF dir: its config.json, every tensor of the published checkpoint (sparse: data as holes)
    in `shards` shards, and model.safetensors.index.json."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", REAL_MODELS[name])
    flat = list(real_tensors(name).items())
    weight_map = {}
    total = 0
    for k in range(shards):
        group = dict(flat[k * len(flat) // shards:(k + 1) * len(flat) // shards])
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(root / fname, group, sparse=sparse)
        weight_map.update({t: fname for t in group})
        total += sum(nbytes(d, s) for d, s in group.values())
    write_json(root / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    return root


def amx_weights(root: str | Path, shape: Shape = TINY, bits: int = 8, numa: int = 1, sparse: bool = False,
                skip_layers: Iterable[int] = (), per_layer_files: bool = True) -> Path:
    """A kt-kernel converted AMX dir: `blk.{L}.ffn_{gate,up,down}_exps.{E}.numa.{N}.{weight,scale}` keys."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    h, mi = shape.hidden, shape.moe_inter
    wdtype = "I8" if bits == 8 else "U8"
    files: dict[str, dict] = {}
    for layer in shape.moe_layers:
        if layer in skip_layers:
            continue
        t = files.setdefault(f"layer-{layer:03d}.safetensors" if per_layer_files else "experts.safetensors", {})
        for proj in ("gate", "up", "down"):
            for e in range(shape.experts):
                for n in range(numa):
                    t[f"blk.{layer}.ffn_{proj}_exps.{e}.numa.{n}.weight"] = (wdtype, (h * mi * bits // 8 // numa,))
                    t[f"blk.{layer}.ffn_{proj}_exps.{e}.numa.{n}.scale"] = ("F32", (mi // numa if proj != "down" else h,))
    for name, t in files.items():
        write_safetensors(root / name, t, sparse=sparse)
    return root


def _lora_a_b(proj: str, shape: Shape, r: int) -> tuple[tuple[int, int], tuple[int, int]]:
    h, mi = shape.hidden, shape.moe_inter
    if proj == "down":
        return (r, mi), (h, r)
    return (r, h), (mi, r)


def expert_adapter(root: str | Path, shape: Shape = TINY, r: int = 8, alpha: float = 16.0,
                   skip: Iterable[tuple[int, int, str, str]] = (), rank_of: Callable | None = None,
                   nonexpert: bool = False) -> Path:
    """sglang-kt 0.7 converted expert adapter: adapter_config.json + adapter_model.safetensors (.mlp.experts. keys)."""
    root = Path(root)
    skip = set(skip)
    t: dict[str, tuple[str, tuple[int, ...]]] = {}
    for layer in shape.moe_layers:
        for e in range(shape.experts):
            for proj in ("gate", "up", "down"):
                rr = rank_of(layer, e, proj) if rank_of else r
                a, b = _lora_a_b(proj, shape, rr)
                for ab, dims in (("A", a), ("B", b)):
                    if (layer, e, proj, ab) not in skip:
                        t[f"base_model.model.model.layers.{layer}.mlp.experts.{e}.{proj}_proj.lora_{ab}.weight"] = (
                            "BF16", dims)
    if nonexpert:
        t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = ("BF16", (r, shape.hidden))
    write_safetensors(root / "adapter_model.safetensors", t)
    write_json(root / "adapter_config.json", {"peft_type": "LORA", "r": r, "lora_alpha": alpha,
                                              "target_modules": ["gate_proj", "up_proj", "down_proj"],
                                              "base_model_name_or_path": "deepseek-ai/DeepSeek-V2-Lite-Chat"})
    return root


def peft_lora(root: str | Path, shape: Shape = TINY, r: int = 8, alpha: float = 16.0) -> Path:
    """An ordinary PEFT LoRA checkpoint dir (attention projections)."""
    root = Path(root)
    t = {}
    for layer in range(shape.layers):
        for proj in ("q_proj", "o_proj"):
            t[f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_A.weight"] = ("BF16", (r, shape.hidden))
            t[f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_B.weight"] = ("BF16", (shape.hidden, r))
    write_safetensors(root / "adapter_model.safetensors", t)
    write_json(root / "adapter_config.json", {"peft_type": "LORA", "r": r, "lora_alpha": alpha,
                                              "target_modules": ["q_proj", "o_proj"], "lora_dropout": 0.0,
                                              "base_model_name_or_path": "deepseek-ai/DeepSeek-V2-Lite-Chat"})
    return root


def moe_lora_pt(path: str | Path, shape: Shape = TINY, r: int = 8) -> Path:
    """The seed fork's converted MoE LoRA (convert_moe_lora.py output): a torch.save archive."""
    layers = {}
    for layer in shape.moe_layers:
        layers[layer] = {f"{p}_lora_{ab}": ("bf16", (shape.experts,) + dims)
                         for p in ("gate", "up", "down") for ab, dims in zip("ab", _lora_a_b(p, shape, r))}
    return write_torch_zip(path, {"format": "kt_moe_lora", "rank": r, "layers": layers})


def demo(root: str | Path) -> dict[str, Path]:
    """The tree `configs/demo.yaml` uses."""
    root = Path(root)
    out = {
        "model": hf_model(root / "model"),
        "kt-amxint8": amx_weights(root / "kt-amxint8"),
        "moe_lora.pt": moe_lora_pt(root / "moe_lora.pt"),
        "lora": peft_lora(root / "lora"),
    }
    return out


# -- profiles and broken variants -------------------------------------------------------------

def moe_lora_profile(root: Path, **extra) -> dict:
    """kt-moe-lora profile over a `demo()` tree (the seed's setup)."""
    p = {"model": {"path": str(root / "model")}, "kt": {"weight_path": str(root / "kt-amxint8")},
         "moe_lora": {"path": str(root / "moe_lora.pt"), "sft_method": "AMXBF16_SFT"},
         "lora": {"paths": [str(root / "lora")]}, "runtime": {"flavor": "kt-moe-lora"}}
    return _merge(p, extra)


def amx_profile(root: Path, **extra) -> dict:
    """Plain AMXINT8 inference over a `demo()` tree, one thread pool."""
    p = {"model": {"path": str(root / "model")},
         "kt": {"weight_path": str(root / "kt-amxint8"), "method": "AMXINT8", "threadpool_count": 1, "cpuinfer": 4},
         "runtime": {"flavor": "sglang-kt"}}
    return _merge(p, extra)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    make(path)


def _pickle_named_safetensors(root: Path) -> dict:
    demo(root)  # seed bug 5: convert_moe_lora.py's torch.save output named .safetensors inside the checkpoint dir
    moe_lora_pt(root / "lora" / "adapter_model_converted.safetensors")
    return moe_lora_profile(root)


def _demo_shard(root: Path) -> tuple[Path, bytes, int]:
    """The demo's second shard: its path, bytes and header length."""
    demo(root)
    shard = root / "model" / "model-00002-of-00002.safetensors"
    raw = shard.read_bytes()
    return shard, raw, int.from_bytes(raw[:8], "little")


def _truncated_header(root: Path) -> dict:
    shard, raw, n = _demo_shard(root)
    cut = raw[8:8 + n // 2]  # JSON cut in half; length field made to match
    shard.write_bytes(len(cut).to_bytes(8, "little") + cut + raw[8 + n:])
    return moe_lora_profile(root)


def _header_beyond_file(root: Path) -> dict:
    shard, raw, n = _demo_shard(root)
    shard.write_bytes(raw[:8 + n // 2])  # download stopped inside the header
    return moe_lora_profile(root)


def _wrong_numa_count(root: Path) -> dict:
    demo(root)
    _replace(root / "kt-amxint8", lambda p: amx_weights(p, numa=2))
    return amx_profile(root)


def _missing_layer(root: Path) -> dict:
    demo(root)
    _replace(root / "kt-amxint8", lambda p: amx_weights(p, skip_layers=(TINY.moe_layers[-1],)))
    return amx_profile(root)


def _duplicate_basename(root: Path) -> dict:
    demo(root)
    amx_weights(root / "kt-amxint8" / "old", skip_layers=TINY.moe_layers[1:])
    return amx_profile(root)


def _non_utf8_config(root: Path) -> dict:
    demo(root)
    (root / "model" / "config.json").write_bytes(b'{"model_type": "deepseek_v2", "name": "\xff\xfe"}')
    return moe_lora_profile(root)


def _empty_file(root: Path) -> dict:
    demo(root)
    _replace(root / "moe_lora.pt", lambda p: p.write_bytes(b""))
    return moe_lora_profile(root)


def _directory_where_file(root: Path) -> dict:
    demo(root)
    _replace(root / "moe_lora.pt", lambda p: p.mkdir())
    return moe_lora_profile(root)


def _unreadable_file(root: Path) -> dict:
    demo(root)
    os.chmod(root / "moe_lora.pt", 0)
    return moe_lora_profile(root)


def _symlink_loop(root: Path) -> dict:
    demo(root)
    _replace(root / "moe_lora.pt", lambda p: p.symlink_to(p.name))
    return moe_lora_profile(root)


BROKEN: dict[str, Callable[[Path], dict]] = {
    "pickle-named-safetensors": _pickle_named_safetensors,
    "truncated-header": _truncated_header,
    "header-beyond-file": _header_beyond_file,
    "wrong-numa-count": _wrong_numa_count,
    "missing-layer": _missing_layer,
    "duplicate-basename": _duplicate_basename,
    "non-utf8-config": _non_utf8_config,
    "empty-file": _empty_file,
    "directory-where-file": _directory_where_file,
    "unreadable-file": _unreadable_file,
    "symlink-loop": _symlink_loop,
}


MARKER = ".kt-launch-synthetic"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="devtools/synthetic.py",
                                 description="Build the tiny synthetic demo tree that configs/demo.yaml uses.")
    ap.add_argument("dir", help="where to build (e.g. demo/)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        print(f"devtools/synthetic.py: {root} exists and is not a directory", file=sys.stderr)
        return 2
    names = ("model", "kt-amxint8", "moe_lora.pt", "lora")
    present = [p for p in names if (root / p).exists() or (root / p).is_symlink()]
    if present and not (root / MARKER).exists():  # never delete what we did not build
        print(f"devtools/synthetic.py: {root} already holds {', '.join(present)}, not built by this tool; "
              "pick an empty or new directory", file=sys.stderr)
        return 2
    for p in present:  # rebuild cleanly
        _replace(root / p, lambda _: None)
    made = demo(root)
    (root / MARKER).write_text("built by devtools/synthetic.py (make demo); safe to delete with its siblings\n")
    if not args.quiet:
        out = io.StringIO()
        for name, p in made.items():
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            out.write(f"  {name:<12} {p}  ({size / 1024:.0f} KiB)\n")
        print(f"synthetic DeepSeek-V2-shaped demo tree in {root}:\n{out.getvalue()}", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
