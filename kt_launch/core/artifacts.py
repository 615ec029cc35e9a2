"""What preflight reads about the user's files (model dir, weight dir, adapters, port), as plain values.

facts/artifacts.py gathers them (all the I/O); resolve/preflight*.py judges them. Headers only, never tensor data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kt_launch.core.adapters import AdapterConfig
from kt_launch.core.fileid import FileId


@dataclass(frozen=True)
class ExpertSet:
    """HF-named routed-expert tensors (`…layers.L.mlp.experts.E.{gate,up,down}_proj.*`, and the layouts core/archs.py
    lists: fused 3-D gate_up_proj/down_proj holding every expert of a layer, DeepSeek-V4's ffn.experts.E.w1/w3/w2)
    found in some shards."""

    layers: dict[int, int] = field(default_factory=dict)  # layer -> experts that have gate, up and down weights
    dtypes: frozenset[str] = frozenset()  # dtypes of the projection weights
    suffixes: frozenset[str] = frozenset()  # weight, weight_scale_inv, qweight, ...
    nbytes: int = 0  # every routed-expert tensor
    count: int = 0
    layer_bytes: dict[int, int] = field(default_factory=dict)  # layer -> bytes of its routed-expert tensors (all suffixes)
    layer_dtype_bytes: dict[tuple[int, str], int] = field(default_factory=dict)  # (layer, dtype) -> bytes

    @property
    def present(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class ModelDirFacts:
    path: str
    node: FileId
    index: str | None = None  # model.safetensors.index.json, when present
    index_problem: str | None = None
    missing_shards: tuple[str, ...] = ()  # named in the index, not on disk
    shards: tuple[FileId, ...] = ()
    experts: ExpertSet = ExpertSet()


@dataclass(frozen=True)
class WeightDirFacts:
    path: str
    node: FileId
    amx_layers: dict[int, int] = field(default_factory=dict)  # layer -> experts (blk.* keys or _layer_ dirs)
    amx_numa: dict[int, int] = field(default_factory=dict)  # layer -> NUMA partitions
    amx_form: str | None = None  # "safetensors" (blk.* keys) | "kt" (_layer_*/_numa_*/*.kt)
    amx_gate_bytes: int | None = None  # bytes of one expert's gate weight, all partitions (INT4 ~ H*I/2, INT8 ~ H*I)
    amx_nbytes: int = 0
    hf: ExpertSet = ExpertSet()
    gguf: tuple[FileId, ...] = ()
    safetensors: tuple[FileId, ...] = ()  # every *.safetensors under the tree (kt-kernel walks it recursively)
    top_safetensors: int = 0  # *.safetensors directly in the dir
    duplicates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # basename -> paths
    bad: tuple[FileId, ...] = ()  # unusable entries met during the walk (loops, unreadable, ...)

    @property
    def looks_like(self) -> str | None:
        """The weight format this dir holds: amx, hf, gguf or None."""
        if self.amx_layers:
            return "amx"
        if self.hf.present:
            return "hf"
        if self.gguf:
            return "gguf"
        return None


@dataclass(frozen=True)
class AdapterDirFacts:
    path: str
    node: FileId
    config: AdapterConfig | None = None
    files: tuple[FileId, ...] = ()  # *.safetensors / *.bin / *.pt / *.pth directly inside (what SGLang globs)
    weights_file: str | None = None  # the safetensors the expert loader reads (adapter_model.safetensors first)
    expert_lora: dict[tuple[int, int, str, str], tuple[int, ...]] = field(default_factory=dict)
    nonexpert_lora_keys: int = 0
    other_keys: int = 0
    fused: bool = False  # a raw fused_expert_lora.safetensors (training output) is present


@dataclass(frozen=True)
class PortFact:
    host: str
    port: int
    status: str  # free | in-use | no-permission | not-local | unresolvable | unknown
    detail: str = ""


@dataclass(frozen=True)
class ArtifactFacts:
    model: ModelDirFacts | None = None
    weights: WeightDirFacts | None = None  # kt.weight_path when set in the profile
    moe_lora: FileId | None = None
    moe_lora_dir: AdapterDirFacts | None = None  # when moe_lora.path is a directory
    loras: dict[str, AdapterDirFacts] = field(default_factory=dict)  # lora.paths entry path -> facts
    port: PortFact | None = None
    problems: tuple[str, ...] = ()  # sections that could not be inspected (field: error)
