"""The resolved launch plan: values with provenance, plus findings. Produced by resolve(), read by render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kt_launch.core.findings import Finding, has_errors
from kt_launch.core.memory import MemoryPlan
from kt_launch.core.placement import PlacementPlan

if TYPE_CHECKING:
    from kt_launch.core.sglang import SglangFacts
    from kt_launch.core.sglang_config import SglangConfigFile

Source = Literal["default", "profile", "env", "cli", "host", "derived", "tuned"]


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: Source
    reason: str

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source, "reason": self.reason}


@dataclass
class LaunchPlan:
    """Everything render needs. `values` is keyed by profile vocabulary ("kt.cpuinfer", "moe_lora.path")."""

    flavor: str
    values: dict[str, Resolved] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    # Flags the installed SGLang's real parser accepts (None: not inspected; the static catalogue applies).
    accepted_flags: frozenset[str] | None = None
    memory: MemoryPlan | None = None  # GPU and RAM budget of the resolved values (resolve/memory.py)
    # The installed SGLang whose parser judges the pass-through flags (set with accepted_flags; None: not judged),
    # and SGLang's own --config file among them as read (render/passthrough.py).
    parser: SglangFacts | None = None
    sglang_config: SglangConfigFile | None = None
    placement: PlacementPlan | None = None  # GPU experts per MoE layer under kt.expert_placement (resolve/placement.py)

    def get(self, key: str, default: Any = None) -> Any:
        r = self.values.get(key)
        return default if r is None else r.value

    @property
    def ok(self) -> bool:
        return not has_errors(self.findings)
