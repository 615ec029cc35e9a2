"""Where each local fleet replica runs: its NUMA node's usable CPUs (CPU affinity, set in the child before
exec) and its node's memory (`numactl --membind`, when numactl is installed).

Which CPUs each replica gets is the plan's (Replica.cpus, resolve/fleet.py: disjoint shares of the node's own
CPU list for replicas that share a node, whole cores with their SMT siblings). They are intersected with what kt-launch may use here
(a --host-facts file
may describe another machine); what cannot be placed is a warning, never a failed start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from kt_launch.core.fleet import Replica
from kt_launch.core.host import HostFacts


@dataclass(frozen=True)
class Placement:
    cpus: frozenset[int]  # the affinity mask; empty = not pinned
    membind: tuple[int, ...]  # nodes for numactl --membind; () = memory not bound
    notes: tuple[str, ...] = ()  # why something could not be placed (printed as warnings)

    def wrap(self, argv: list[str]) -> list[str]:
        return ["numactl", f"--membind={','.join(map(str, self.membind))}", "--", *argv] if self.membind else argv


def plan_placements(replicas: list[Replica], facts: HostFacts, allowed: set[int], numactl: bool,
                    present_nodes: set[int] | None) -> tuple[list[Placement], list[str]]:
    """A placement per replica, and notes for the whole fleet. Pure: the caller passes what kt-launch may run
    on (`allowed`), whether numactl is installed, and the NUMA nodes this machine has (None = unknown)."""
    out: list[Placement] = []
    common = [] if numactl or not replicas else [
        "numactl is not installed: the replicas' memory is not bound to their NUMA nodes, only their CPUs are "
        "(install numactl to bind it)"]
    memoryless = {n.id for n in facts.numa if n.memoryless}  # numactl --membind to one fails or starves
    # numactl --membind to a node the cgroup withholds (cpuset.mems.effective) fails: bind only allowed nodes
    withheld = set() if facts.memory_nodes is None else {n.id for n in facts.numa} - set(facts.memory_nodes)
    for r in replicas:
        notes: list[str] = []
        mine = list(r.cpus)  # the plan's share of its nodes' CPUs (resolve/fleet.py)
        cpus = frozenset(mine) & allowed
        if not cpus:
            notes.append(f"{r.name}: CPUs {mine or 'none'} of NUMA node(s) {list(r.nodes)} are not usable by "
                         "kt-launch here: the replica is not pinned")
        elif len(cpus) < len(mine):
            notes.append(f"{r.name}: {len(mine) - len(cpus)} of its node's CPUs are outside kt-launch's affinity "
                         "here; pinned to the rest")
        membind: tuple[int, ...] = ()
        if not numactl:
            pass
        elif present_nodes is not None and not set(r.nodes) <= present_nodes:
            notes.append(f"{r.name}: NUMA node(s) {sorted(set(r.nodes) - present_nodes)} do not exist on this "
                         "machine: its memory is not bound")
        else:
            membind = tuple(n for n in r.nodes if n not in memoryless and n not in withheld)
            if denied := sorted(set(r.nodes) & withheld - memoryless):
                notes.append(f"{r.name}: NUMA node(s) {denied} are not among the memory nodes allowed here "
                             f"({facts.memory_nodes_source}: {list(facts.memory_nodes or ())}): "
                             + (f"its memory is bound to node(s) {list(membind)}" if membind else
                                "its memory is not bound"))
            elif len(membind) < len(r.nodes):
                without = sorted(set(r.nodes) - set(membind))
                notes.append(f"{r.name}: NUMA node(s) {without} have no memory: "
                             + (f"its memory is bound to node(s) {list(membind)}" if membind else
                                "its memory is not bound"))
        out.append(Placement(cpus, membind, tuple(notes)))
    return out, common


def placements(replicas: list[Replica], facts: HostFacts) -> tuple[list[Placement], list[str]]:
    """plan_placements with this machine's facts: kt-launch's affinity, numactl on PATH, /sys nodes."""
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = set()
    try:
        present = {int(d[4:]) for d in os.listdir("/sys/devices/system/node")
                   if d.startswith("node") and d[4:].isdigit()}
    except OSError:
        present = None
    return plan_placements(replicas, facts, allowed, shutil.which("numactl") is not None, present)
