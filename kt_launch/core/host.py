"""Host facts as values: CPU, NUMA nodes, memory, GPUs. Gathered by facts/host.py, read by resolve.

A size that was not learned is None, never 0: 0 is a fact ("this NUMA node has no memory"), and each reader
decides what an unknown means where it reads it (no `numactl --membind` to a node without memory, no share of
RAM invented for it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CpuFacts:
    model: str
    physical_cores: int
    logical_cpus: int
    usable_cpus: tuple[int, ...]
    flags: frozenset[str]
    # Physical cores inside the affinity mask and cgroup quota; None = derive from the ratio.
    usable_physical_cores: int | None = None


@dataclass(frozen=True)
class NumaNode:
    id: int
    cpus: tuple[int, ...]
    memory_bytes: int | None = None  # None = unknown; 0 = the node has no memory of its own (CPUs only)

    @property
    def memoryless(self) -> bool:
        """Known to have no memory of its own: its CPUs allocate on other nodes, numactl cannot bind to it."""
        return self.memory_bytes == 0


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    memory_bytes: int = 0
    uuid: str = ""
    numa_node: int | None = None  # from sysfs via the PCI bus id; None = unknown (or no NUMA affinity)
    used_bytes: int = 0  # nvidia-smi memory.used when gathered (other processes' memory); 0 = none or unknown


@dataclass(frozen=True)
class HostFacts:
    cpu: CpuFacts
    numa: tuple[NumaNode, ...]
    memory_total_bytes: int
    memory_available_bytes: int
    gpus: tuple[GpuFacts, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)
    source: str = field(default="this machine", compare=False)  # for messages only
    # The machine kt-launch runs on, gathered live (its ports and GPUs are the server's); a recorded host
    # (--host-facts, fleet.hosts, one fleet replica's view) is not, whatever its name.
    local: bool = field(default=True, compare=False)

    # -- derived views -------------------------------------------------------------------
    @property
    def usable_physical_cores(self) -> int:
        if self.cpu.usable_physical_cores is not None:
            return max(1, self.cpu.usable_physical_cores)
        logical = max(1, self.cpu.logical_cpus)
        usable = len(self.cpu.usable_cpus) or logical
        return max(1, round(self.cpu.physical_cores * usable / logical))

    @property
    def cpu_numa_nodes(self) -> tuple[NumaNode, ...]:
        """NUMA nodes that have CPUs inside the affinity mask (memory-only nodes are no thread pool)."""
        usable = set(self.cpu.usable_cpus)
        nodes = tuple(n for n in self.numa if n.cpus and (not usable or usable & set(n.cpus)))
        return nodes or (NumaNode(0, tuple(self.cpu.usable_cpus)),)

    # -- (de)serialisation: the `doctor --json` / `--host-facts` format -----------------
    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": {
                "model": self.cpu.model,
                "physical_cores": self.cpu.physical_cores,
                "logical_cpus": self.cpu.logical_cpus,
                "usable_cpus": list(self.cpu.usable_cpus),
                "usable_physical_cores": self.usable_physical_cores,
                "flags": sorted(self.cpu.flags),
            },
            "numa": [{"id": n.id, "cpus": list(n.cpus), "memory_bytes": n.memory_bytes} for n in self.numa],
            "memory": {"total_bytes": self.memory_total_bytes, "available_bytes": self.memory_available_bytes},
            "gpus": [
                {"index": g.index, "name": g.name, "memory_bytes": g.memory_bytes, **({"uuid": g.uuid} if g.uuid else {}),
                 "numa_node": g.numa_node, "used_bytes": g.used_bytes}
                for g in self.gpus
            ],
        }
