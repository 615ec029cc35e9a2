"""The memory plan as values: checkpoint bytes by role (from headers), the per-GPU and RAM budget, the fit.

Filled by facts/weights.py (bytes) and resolve/memory.py (the plan); read by render and the `fit` command.
Field names of `MemoryPlan.to_json()` are a contract (`--dry-run --json` "memory"); fields may be added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

MOE_LORA_FIT = "MoE-LoRA keeps every expert on the CPU"  # Fit.limited_by in MoE-LoRA mode (the words only)


class FitStatus(str, Enum):
    """What a fit found; readers decide by this, never by `limited_by`'s words or a count of -1."""

    FITS = "fits"  # max_gpu_experts experts per layer leave the KV target on every GPU
    NO_ROOM = "no room"  # the KV target does not fit even without GPU experts (max_gpu_experts is -1)
    MOE_LORA = "MoE-LoRA"  # the KV target fits; MoE-LoRA keeps every expert on the CPU (max_gpu_experts is 0)
    NO_FACTS = "no facts"  # nothing was sized: no GPU facts or no checkpoint headers (max_gpu_experts is 0)


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of the model.path checkpoint by the role SGLang gives each tensor, summed from safetensors headers.

    Routed-expert tensors (`…mlp.experts.E.*`, weights and their scales, and the other layouts core/archs.py
    lists: fused 3-D `experts.gate_up_proj`, gpt-oss `_blocks/_scales/_bias`, DeepSeek-V4 `ffn.experts.E.w1`) are
    counted per MoE layer and dtype; every other tensor is non-expert and split by how tensor parallelism stores it.
    Layers at or past `num_hidden_layers` (DeepSeek-V3's MTP layer 61) and the `mtp.*` / `model.mtp_*` blocks
    (Qwen3-Next, Qwen3.5, ERNIE) are not loaded by SGLang without speculative decoding and are only reported as
    `skipped_bytes`."""

    expert_by_layer: dict[int, int] = field(default_factory=dict)
    expert_by_dtype: dict[str, int] = field(default_factory=dict)
    nonexpert_by_dtype: dict[str, int] = field(default_factory=dict)
    replicated_bytes: int = 0  # every TP rank holds these whole (norms, router, MLA latent down-projections)
    sharded_bytes: int = 0  # split evenly over TP ranks (embeddings, lm_head, q/o projections, dense and shared MLPs)
    kv_proj_bytes: int = 0  # GQA k_proj/v_proj: split by KV heads, each rank keeps at least one head
    skipped_bytes: int = 0  # tensors of layers >= num_hidden_layers
    tensors: int = 0
    source: str = ""  # the model dir

    @property
    def expert_bytes(self) -> int:
        return sum(self.expert_by_layer.values())

    @property
    def nonexpert_bytes(self) -> int:
        return self.replicated_bytes + self.sharded_bytes + self.kv_proj_bytes

    def to_json(self) -> dict[str, Any]:
        return {"expert_bytes": self.expert_bytes, "nonexpert_bytes": self.nonexpert_bytes,
                "expert_by_layer": {str(k): v for k, v in self.expert_by_layer.items()},
                "expert_by_dtype": dict(self.expert_by_dtype), "nonexpert_by_dtype": dict(self.nonexpert_by_dtype),
                "replicated_bytes": self.replicated_bytes, "sharded_bytes": self.sharded_bytes,
                "kv_proj_bytes": self.kv_proj_bytes, "skipped_bytes": self.skipped_bytes}


@dataclass(frozen=True)
class GpuMemory:
    """One GPU of the TP group. free = total - reserve - weights - gpu_experts - kv_tokens * kv_bytes_per_token
    - state_bytes."""

    index: int
    name: str
    total_bytes: int
    weights_bytes: int  # non-expert weights' TP share + kt buffers on this GPU (detail below)
    gpu_experts_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    reserve_bytes: int  # total - mem_fraction_static x free: activations, CUDA graphs, NCCL, other processes' memory
    free_bytes: int
    nonexpert_bytes: int = 0
    kt_buffers_bytes: int = 0  # sglang-kt's staging buffer (rank 0) and the layerwise-prefill layer
    mla_copies_bytes: int = 0  # MLA's BF16 w_kc/w_vc beside kv_b_proj (in nonexpert_bytes and weights_bytes)
    margin_bytes: int = 0  # fit.gpu_margin_mib (in reserve_bytes)
    used_bytes: int = 0  # held by other processes when the host facts were taken (in reserve_bytes)
    state_bytes: int = 0  # hybrid linear attention: SGLang's per-request state pool (mamba pool), beside the KV
    state_requests: int = 0  # requests that pool holds

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "total_bytes": self.total_bytes,
                "weights_bytes": self.weights_bytes, "gpu_experts_bytes": self.gpu_experts_bytes,
                "kv_bytes_per_token": self.kv_bytes_per_token, "kv_tokens": self.kv_tokens,
                "reserve_bytes": self.reserve_bytes, "free_bytes": self.free_bytes,
                "nonexpert_bytes": self.nonexpert_bytes, "kt_buffers_bytes": self.kt_buffers_bytes,
                "mla_copies_bytes": self.mla_copies_bytes, "margin_bytes": self.margin_bytes,
                "used_bytes": self.used_bytes, "state_bytes": self.state_bytes,
                "state_requests": self.state_requests}


@dataclass(frozen=True)
class NodeMemory:
    """One NUMA node that hosts a kt-kernel thread pool: its share of the experts and its buffers."""

    node: int
    total_bytes: int | None  # None = unknown; 0 = the node has no memory (its pool allocates on other nodes)
    need_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "total_bytes": self.total_bytes, "need_bytes": self.need_bytes}


@dataclass(frozen=True)
class RamMemory:
    total_bytes: int
    experts_bytes: int  # every routed expert of every MoE layer in the CPU method's format (GPU-placed ones too)
    other_bytes: int  # kt-kernel's per-pool buffers
    need_bytes: int
    experts_source: str = ""  # "kt.weight_path headers", "model.path headers", "estimated for AMXINT4"
    available_bytes: int = 0
    nodes: tuple[NodeMemory, ...] = ()
    cpu_variant: str = ""  # kt-kernel's CPU variant the host facts imply ("" = CPU flags unknown)
    gpu_experts_in_ram: bool = True  # False on the avx2 build, which skips GPU-placed experts at load
    estimated: bool = False  # the experts' bytes come from the shape and method, not from file headers

    def to_json(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "experts_bytes": self.experts_bytes, "other_bytes": self.other_bytes,
                "need_bytes": self.need_bytes, "experts_source": self.experts_source,
                "available_bytes": self.available_bytes, "nodes": [n.to_json() for n in self.nodes],
                "cpu_variant": self.cpu_variant, "gpu_experts_in_ram": self.gpu_experts_in_ram,
                "estimated": self.estimated}


@dataclass(frozen=True)
class Fit:
    """The largest kt.num_gpu_experts that leaves `kv_tokens` of KV on every GPU of the TP group."""

    max_gpu_experts: int
    kv_tokens: int  # the KV target the fit kept room for
    limited_by: str  # "gpu N", "experts per layer", or why no fit was made (for people)
    per_layer_bytes: int = 0  # bytes one more expert per layer costs on the tightest GPU
    gpu: int | None = None  # index of the GPU that limits the count; None when no GPU does
    status: FitStatus = FitStatus.FITS

    @property
    def fits(self) -> bool:
        """The KV target fits (a count of 0 or more experts per layer); False only for NO_ROOM."""
        return self.status is not FitStatus.NO_ROOM

    def to_json(self) -> dict[str, Any]:
        return {"max_gpu_experts": self.max_gpu_experts if self.fits else None, "fits": self.fits,
                "kv_tokens": self.kv_tokens, "limited_by": self.limited_by, "per_layer_bytes": self.per_layer_bytes,
                "gpu": self.gpu, "status": self.status.value}


@dataclass(frozen=True)
class MemoryPlan:
    gpus: tuple[GpuMemory, ...]
    ram: RamMemory | None
    fit: Fit | None
    tp_size: int = 1
    num_gpu_experts: int = 0  # per MoE layer, as planned
    gpu_experts_total: int = 0  # over all MoE layers (what sglang-kt places)
    mem_fraction_static: float = 0.0
    mem_fraction_source: str = ""  # "server.mem_fraction_static" or "SGLang default (_handle_gpu_memory_settings)"
    chunked_prefill_size: int = 0
    notes: tuple[str, ...] = ()
    weights: WeightBytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {"gpus": [g.to_json() for g in self.gpus], "ram": self.ram.to_json() if self.ram else None,
                "fit": self.fit.to_json() if self.fit else None, "tp_size": self.tp_size,
                "num_gpu_experts": self.num_gpu_experts, "gpu_experts_total": self.gpu_experts_total,
                "mem_fraction_static": self.mem_fraction_static, "mem_fraction_source": self.mem_fraction_source,
                "chunked_prefill_size": self.chunked_prefill_size, "notes": list(self.notes),
                "checkpoint": self.weights.to_json() if self.weights else None}
