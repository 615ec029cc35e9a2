"""Expert placement: the stats-file facts (read in runtime.python by facts/expert_stats_worker.py) and the plan's
placement table. Plain values, no I/O.

sglang-kt 0.7.2 places GPU experts by `--kt-expert-placement-strategy` (kt_ep_wrapper.py:4619-4716). `frequency`
reads `--init-expert-location FILE.pt` (a dict with `logical_count`, or a raw tensor, of shape
`[buffer, num_hidden_layers, num_experts]`, summed over dim 0) and hands the per-layer sums to kt-kernel's
`generate_gpu_experts_masks` (kt_kernel/experts_base.py:162-210), which takes the global top counts over all layers:
the per-layer GPU-expert count then varies. Without a `.pt` it warns and falls back to uniform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# kt.expert_placement's choices: sglang-kt's four, and auto (frequency where a calibration exists, else uniform)
STRATEGIES = ("uniform", "frequency", "front-loading", "random")
CHOICES = ("auto", *STRATEGIES)

# the answer's `problem` kinds (expert_stats_worker.py); decisions read these, never the message
NOT_LOADABLE = "not_loadable"  # torch.load(weights_only=True) refused it, or it is no dict/tensor
NO_LOGICAL_COUNT = "no_logical_count"  # a dict without logical_count
NOT_3D = "not_3d"
SHAPE = "shape"  # layers or experts differ from config.json
NEGATIVE = "negative"
ALL_ZERO = "all_zero"
NOT_NUMBER = "not_number"  # a tensor of a non-numeric dtype (bool, complex) or with NaN/inf


def is_workload_name(value: str) -> bool:
    """kt.expert_stats names a workload (looked up in the calibration cache), not a file: no slash, no `.pt` end."""
    return "/" not in value and not value.endswith(".pt")


@dataclass(frozen=True)
class StatsCheck:
    """What the worker found in one stats file, for one model shape. `problem` (a kind above) and `message` (names
    the file and both shapes) when it is refused; `masks_error`: why the per-layer counts could not be computed
    (kt-kernel does not import there) while the file itself is fine."""

    path: str
    ok: bool
    problem: str | None = None
    message: str = ""
    shape: tuple[int, ...] = ()
    total: float = 0.0  # routed tokens recorded in the MoE layers (sum of the counts)
    # budget (total GPU experts over the MoE layers) -> per MoE layer GPU-expert counts, frequency mask
    per_layer: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    served: Mapping[int, float] = field(default_factory=dict)  # budget -> share of routed tokens, frequency mask
    uniform_served: Mapping[int, float] = field(default_factory=dict)  # budget -> the same for the uniform mask
    masks_error: str | None = None
    kt_kernel: str = ""  # the kt-kernel version whose mask function computed per_layer
    from_cache: bool = False

    @classmethod
    def from_answer(cls, path: str, d: Mapping[str, Any], from_cache: bool = False) -> "StatsCheck":
        def budgets(m: Any) -> dict[int, Any]:
            return {int(k): v for k, v in (m or {}).items()}

        return cls(path=path, ok=bool(d.get("ok")), problem=d.get("problem"), message=str(d.get("message") or ""),
                   shape=tuple(int(x) for x in d.get("shape") or ()), total=float(d.get("total") or 0.0),
                   per_layer={k: tuple(int(x) for x in v) for k, v in budgets(d.get("per_layer")).items()},
                   served={k: float(v) for k, v in budgets(d.get("served")).items()},
                   uniform_served={k: float(v) for k, v in budgets(d.get("uniform_served")).items()},
                   masks_error=d.get("masks_error"), kt_kernel=str(d.get("kt_kernel") or ""), from_cache=from_cache)


@dataclass(frozen=True)
class StatsFacts:
    """kt.expert_stats as found: the file (a path, or a workload's file in the calibration cache), how it was found,
    and the worker's check of it (None: not checked, `unchecked` says why)."""

    path: str | None  # None: nothing found (`missing` says why)
    source: str  # "profile" (a path), "calibration" (a workload in the cache), "none"
    workload: str | None = None
    missing: str = ""  # why no file: a workload name not in the cache (names those that are)
    check: StatsCheck | None = None
    unchecked: str = ""  # why check is None: --dry-run without a cached answer, --no-check, no interpreter, ...
    skipped: bool = False  # check is None by the gate's choice (--dry-run without a cached answer, --no-check), not
    # because the check was tried and gave no answer
    calibrations: tuple[str, ...] = ()  # the workloads calibrated for this model (the cache's names)
    fingerprint: str = ""  # the model's calibration key (facts/expert_stats.py model_fingerprint)


@dataclass(frozen=True)
class PlacementPlan:
    """How the GPU experts fall per MoE layer under the resolved placement (kt-kernel's own mask for frequency),
    and the share of the recorded routed tokens they serve against uniform at the same count."""

    strategy: str
    budget: int  # total GPU experts over the MoE layers
    moe_layers: tuple[int, ...]
    per_layer: tuple[int, ...] | None  # None: not known (no checked stats file, or random)
    served: float | None = None
    uniform_served: float | None = None
    stats: str | None = None  # the file, when frequency reads one
    note: str = ""  # where per_layer came from, or why it is not shown

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "gpu_experts_total": self.budget, "moe_layers": list(self.moe_layers),
                "per_layer": None if self.per_layer is None else list(self.per_layer),
                "served_share": self.served, "uniform_served_share": self.uniform_served,
                "stats": self.stats, "note": self.note}
