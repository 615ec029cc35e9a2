"""Pydantic schema of the host-facts JSON (`doctor --json`, `--host-facts`), for strict reading.

Each field is checked by type (strict: `true` is no count, 8.0 is no CPU id) and bounds, and the file as
a whole by `HostFactsFile._consistent`: a recorded host must be a machine that can exist, so nothing
downstream has to invent a NUMA node or trust a size of NaN. Messages name the field
(`numa[1].cpus`, `gpus[0].index`) so the caller can prefix the file.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Bounds keep a recorded (or hand-edited) file from describing a machine that cannot exist: the largest
# hosts have a few thousand CPUs. Without them `logical_cpus: 1e9` would allocate a billion CPU ids.
MAX_CPUS = 1 << 16
MAX_BYTES = 1 << 60  # an exbibyte: far past any host's memory, well inside every integer type used later
CpuId = Annotated[int, Field(ge=0, lt=MAX_CPUS)]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CpuFile(_Strict):
    model: str = "unknown"
    physical_cores: int = Field(ge=1, le=MAX_CPUS)
    logical_cpus: int = Field(ge=1, le=MAX_CPUS)
    usable_cpus: list[CpuId] = Field(default=[], max_length=MAX_CPUS)  # [] = all of range(logical_cpus)
    usable_physical_cores: int | None = Field(default=None, ge=1, le=MAX_CPUS)
    usable_cpus_source: str = Field(default="", max_length=200)  # "" = not recorded (older files)
    flags: list[str] = Field(default=[], max_length=4096)


class NumaFile(_Strict):
    id: int = Field(ge=0, lt=MAX_CPUS)
    cpus: list[CpuId] = Field(default=[], max_length=MAX_CPUS)
    memory_bytes: Bytes | None = None  # null or absent = unknown; 0 = the node has no memory of its own


class MemoryFile(_Strict):
    total_bytes: Bytes
    available_bytes: Bytes
    # The NUMA nodes the process may allocate on (the cgroup's cpuset.mems.effective); null = not known
    allowed_nodes: list[Annotated[int, Field(ge=0, lt=MAX_CPUS)]] | None = Field(default=None, max_length=MAX_CPUS)
    allowed_nodes_source: str = Field(default="", max_length=200)


class GpuFile(_Strict):
    index: int = Field(ge=0, lt=1024)
    name: str = ""
    memory_bytes: int = Field(ge=1, le=MAX_BYTES)  # required: a GPU of 0 bytes (or of unknown size) sizes nothing
    uuid: str = ""
    numa_node: int | None = Field(default=None, ge=0, lt=MAX_CPUS)  # absent in files recorded before it existed
    used_bytes: Bytes = 0  # memory.used by other processes when recorded; absent in older files (= 0)


class HostFactsFile(_Strict):
    cpu: CpuFile
    numa: list[NumaFile] = Field(default=[], max_length=MAX_CPUS)
    memory: MemoryFile
    gpus: list[GpuFile] = Field(default=[], max_length=1024)

    @model_validator(mode="after")
    def _consistent(self) -> "HostFactsFile":
        problem = consistency_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def consistency_problem(f: HostFactsFile) -> str | None:
    """Why the file as a whole describes no possible machine (naming the field), or None.

    NUMA nodes may hold CPUs outside `usable_cpus` (an affinity mask or cpuset leaves part of a node, or a
    whole socket, unusable), but every usable CPU must lie in exactly one node: then some node always has
    CPUs kt-kernel may use, and no node has to be invented. `numa: []` is refused for the same reason:
    a host whose NUMA layout is unknown is recorded by `doctor --json` as one node holding every CPU."""
    cpu = f.cpu
    if cpu.physical_cores > cpu.logical_cpus:
        return f"cpu.physical_cores ({cpu.physical_cores}) is more than cpu.logical_cpus ({cpu.logical_cpus})"
    usable = cpu.usable_cpus or list(range(cpu.logical_cpus))
    if dup := _duplicates(usable):
        return f"cpu.usable_cpus: CPU {dup[0]} appears twice"
    if len(usable) > cpu.logical_cpus:
        return f"cpu.usable_cpus lists {len(usable)} CPUs, more than cpu.logical_cpus ({cpu.logical_cpus})"
    if cpu.usable_physical_cores is not None and cpu.usable_physical_cores > cpu.physical_cores:
        return (f"cpu.usable_physical_cores ({cpu.usable_physical_cores}) is more than cpu.physical_cores "
                f"({cpu.physical_cores})")
    if not f.numa:
        return ('numa is empty: give the NUMA nodes with their CPUs (one node holding every usable CPU, '
                'e.g. [{"id": 0, "cpus": [...]}], if the host has one), or record the host with '
                '`kt-launch doctor --json`')
    if dup := _duplicates([n.id for n in f.numa]):
        return f"numa: node id {dup[0]} appears twice"
    owner: dict[int, int] = {}
    for i, node in enumerate(f.numa):
        for c in node.cpus:
            if c in owner:
                where = "twice in it" if owner[c] == node.id else f"also in node {owner[c]}"
                return f"numa[{i}].cpus: CPU {c} of node {node.id} is {where}; a CPU belongs to one node"
            owner[c] = node.id
    if not any(n.cpus for n in f.numa):
        return "numa: no node has CPUs; at least one node must list its CPUs"
    outside = [c for c in usable if c not in owner]
    if outside:
        shown = ", ".join(map(str, outside[:8])) + (", ..." if len(outside) > 8 else "")
        return (f"numa: usable CPU(s) {shown} (cpu.usable_cpus) are in no NUMA node; every usable CPU must be "
                "in one node's cpus")
    if f.memory.available_bytes > f.memory.total_bytes:
        return (f"memory.available_bytes ({f.memory.available_bytes}) is more than memory.total_bytes "
                f"({f.memory.total_bytes})")
    if f.memory.allowed_nodes is not None:
        if not f.memory.allowed_nodes:
            return "memory.allowed_nodes is empty: a process may always allocate on some node (null = unknown)"
        if stray := sorted(set(f.memory.allowed_nodes) - {n.id for n in f.numa}):
            return f"memory.allowed_nodes: node(s) {stray} are not among the numa nodes ({sorted(n.id for n in f.numa)})"
    if dup := _duplicates([g.index for g in f.gpus]):
        return f"gpus: index {dup[0]} appears twice"
    ids = {n.id for n in f.numa}
    for i, g in enumerate(f.gpus):
        if g.used_bytes > g.memory_bytes:
            return f"gpus[{i}].used_bytes ({g.used_bytes}) is more than gpus[{i}].memory_bytes ({g.memory_bytes})"
        if g.numa_node is not None and g.numa_node not in ids:
            return f"gpus[{i}].numa_node: node {g.numa_node} is not among the numa nodes ({sorted(ids)})"
    return None


def _duplicates(xs) -> list:
    """[the first value that appears twice], or [] (a list, so that a duplicate 0 is still true)."""
    seen = set()
    for x in xs:
        if x in seen:
            return [x]
        seen.add(x)
    return []
