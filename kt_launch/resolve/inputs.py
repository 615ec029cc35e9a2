"""Everything resolve() reads, gathered at the edge and frozen. Nothing below touches the OS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kt_launch.config.models import UserConfig
from kt_launch.config.sources import Provenance
from kt_launch.facts.adapters import AdapterConfig
from kt_launch.facts.host import HostFacts
from kt_launch.facts.model import ModelFacts


@dataclass(frozen=True)
class TunedThreads:
    """A measured thread count from `kt-launch tune` for this host, model shape and method."""

    cpuinfer: int
    detail: str  # e.g. "tuned 2026-11-28: 14 threads, 1.00 of best decode / 0.98 prefill"
    threadpool_count: int | None = None


@dataclass(frozen=True)
class ResolveInput:
    config: UserConfig
    provenance: Provenance
    host: HostFacts
    current_python: str
    model: ModelFacts | None = None
    model_problem: str | None = None  # why model facts are missing (names the file)
    adapters: dict[str, AdapterConfig] = field(default_factory=dict)  # dir -> adapter_config.json facts
    artifacts: Any = None  # kt_launch.facts.artifacts.ArtifactFacts, None under --no-check
    sglang: Any = None  # kt_launch.facts.sglang.SglangFacts, None when not detected
    tuned: TunedThreads | None = None
    passthrough: tuple[str, ...] = ()
    checks: bool = True  # False under --no-check: no file-system facts were gathered
    profile_path: str | None = None
