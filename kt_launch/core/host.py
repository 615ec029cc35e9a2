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
    # Where cpu.usable_cpus came from ("affinity mask", "cgroup cpuset.cpus.effective", ...): said in provenance.
    cpus_source: str = "affinity mask"
    # The NUMA nodes this process may allocate memory on (cgroup cpuset.mems.effective, the v1 cpuset, or
    # /proc/self/status Mems_allowed_list), and where that came from; None = not learned (every node assumed).
    memory_nodes: tuple[int, ...] | None = None
    memory_nodes_source: str = ""

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
        """NUMA nodes that have CPUs inside the affinity mask (memory-only nodes are no thread pool), less those
        whose memory the cgroup withholds (`memory_nodes`): a pod pinned to node 1 plans node 1 only. A node
        without memory of its own stays (its CPUs allocate elsewhere anyway). When no CPU node's memory is
        allowed, the CPU nodes are kept (the mismatch is a finding, see `memory_mismatch`)."""
        nodes = self._nodes_with_cpus()
        if self.memory_nodes is not None:
            allowed = set(self.memory_nodes)
            kept = tuple(n for n in nodes if n.memoryless or n.id in allowed)
            if any(not n.memoryless for n in kept):
                nodes = kept
        return nodes or (NumaNode(0, tuple(self.cpu.usable_cpus)),)

    def _nodes_with_cpus(self) -> tuple[NumaNode, ...]:
        usable = set(self.cpu.usable_cpus)
        return tuple(n for n in self.numa if n.cpus and (not usable or usable & set(n.cpus)))

    @property
    def memory_mismatch(self) -> tuple[list[int], list[int]] | None:
        """(nodes with usable CPUs whose memory may not be used, allowed memory nodes with no usable CPU), or
        None when the CPUs' nodes and the memory nodes agree (or the memory nodes are not known)."""
        if self.memory_nodes is None:
            return None
        allowed = set(self.memory_nodes)
        cpu_nodes = self._nodes_with_cpus()
        no_mem = [n.id for n in cpu_nodes if not n.memoryless and n.id not in allowed]
        no_cpu = sorted(allowed - {n.id for n in cpu_nodes})
        return (no_mem, no_cpu) if no_mem or no_cpu else None

    # -- (de)serialisation: the `doctor --json` / `--host-facts` format -----------------
    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": {
                "model": self.cpu.model,
                "physical_cores": self.cpu.physical_cores,
                "logical_cpus": self.cpu.logical_cpus,
                "usable_cpus": list(self.cpu.usable_cpus),
                "usable_physical_cores": self.usable_physical_cores,
                "usable_cpus_source": self.cpus_source,
                "flags": sorted(self.cpu.flags),
            },
            "numa": [{"id": n.id, "cpus": list(n.cpus), "memory_bytes": n.memory_bytes} for n in self.numa],
            "memory": {"total_bytes": self.memory_total_bytes, "available_bytes": self.memory_available_bytes,
                       "allowed_nodes": None if self.memory_nodes is None else list(self.memory_nodes),
                       "allowed_nodes_source": self.memory_nodes_source},
            "gpus": [
                {"index": g.index, "name": g.name, "memory_bytes": g.memory_bytes, **({"uuid": g.uuid} if g.uuid else {}),
                 "numa_node": g.numa_node, "used_bytes": g.used_bytes}
                for g in self.gpus
            ],
        }
