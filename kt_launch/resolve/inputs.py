"""Everything resolve() reads, gathered at the edge and frozen. Nothing below touches the OS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kt_launch.core.profile import UserConfig
from kt_launch.core.provenance import Provenance
from kt_launch.core.adapters import AdapterConfig
from kt_launch.core.host import HostFacts
from kt_launch.core.memory import WeightBytes
from kt_launch.core.tuning import TunedThreads
from kt_launch.core.model import ModelFacts
from kt_launch.core.sglang_config import SglangConfigFile  # plain values, no imports of its own beyond typing


if TYPE_CHECKING:  # types only: importing them costs start-up time on every dry-run
    from kt_launch.core.sglang import SglangFacts
    from kt_launch.core.artifacts import ArtifactFacts
    from kt_launch.core.install import InstallFacts
    from kt_launch.core.placement import StatsFacts


@dataclass(frozen=True)
class ResolveInput:
    config: UserConfig
    provenance: Provenance
    host: HostFacts
    current_python: str
    model: ModelFacts | None = None
    model_problem: str | None = None  # why model facts are missing (names the file)
    model_fix: str | None = None  # what to do about model_problem, when not "point model.path at a model dir"
    adapters: dict[str, AdapterConfig] = field(default_factory=dict)  # dir -> adapter_config.json facts
    artifacts: ArtifactFacts | None = None  # None under --no-check
    sglang: SglangFacts | None = None  # None when not inspected
    tuned: TunedThreads | None = None
    passthrough: tuple[str, ...] = ()
    sglang_config: SglangConfigFile | None = None  # SGLang's own --config FILE after `--` or in server.extra_args
    checks: bool = True  # False under --no-check: no file-system facts were gathered
    profile_path: str | None = None
    input_warnings: tuple[str, ...] = ()  # ignored input (an unknown KT_LAUNCH_* variable), each a warning
    weights: WeightBytes | None = None  # model.path bytes by role, from the headers preflight read (memory plan)
    launch_here: bool = False  # the server is about to be started on this machine (exec or --supervise)
    install: InstallFacts | None = None  # the install gate's facts on runtime.python (None: not looked at)
    install_blocks: bool = False  # its errors block (check, a launch) or only warn (--dry-run, --host-facts plans)
    stats: StatsFacts | None = None  # kt.expert_stats found and checked in runtime.python (facts/expert_stats.py)
    gpu_required: bool = True  # False for a fleet replica that fleet.allow_cpu_only lets run without a GPU
    # KT_KERNEL_CPU_VARIANT in kt-launch's own environment, which the server it starts inherits (runtime.env wins);
    # None: unset, or the plan is not for this machine (--host-facts, a fleet's other hosts)
    inherited_cpu_variant: str | None = None
