"""CPU threads and thread pools for kt-kernel.

Rule: kt.cpuinfer = usable physical cores - reserve, where reserve leaves cores for SGLang's scheduler
thread and the GPU driver. On a 16-core AMX Xeon, giving kt-kernel all 15-16 cores made its MoE layer
several times slower than 14: its worker threads spin-wait, and one preempted worker stalls the whole
layer. Hyperthreads are not counted: the AMX/AVX-512 units are per physical core.
"""

from __future__ import annotations

from kt_launch.resolve.steps import step
from kt_launch.core.host import HostFacts
from kt_launch.core.findings import Finding, error, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.plan import Resolved
from kt_launch.resolve.values import is_user_set, user_value


def host_sources(host: HostFacts) -> str:
    """Where the usable CPUs and memory nodes came from, for provenance: "CPUs 0-1 from cgroup
    cpuset.cpus.effective, memory node(s) [0] from cgroup cpuset.mems.effective"."""
    mem = (f"memory node(s) {list(host.memory_nodes)} from {host.memory_nodes_source}"
           if host.memory_nodes is not None else "memory nodes not restricted as far as known")
    return f"{len(host.cpu.usable_cpus)} CPUs from {host.cpus_source}, {mem}"


def core_reserve(cores: int) -> int:
    """Cores left to SGLang's own threads and the GPU driver."""
    if cores >= 8:
        return 2
    if cores >= 3:
        return 1
    return 0


def untuned_cpuinfer(host: HostFacts, pools: int) -> int:
    cores = host.usable_physical_cores
    return max(pools, cores - core_reserve(cores))


@step(fills=("kt.threadpool_count", "kt.numa_nodes", "kt.cpuinfer"), reads=("host", "tuning", "config"))
def resolve_threads(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """Thread pools per NUMA node with usable CPUs, their node ids, and kt.cpuinfer (tuned, or usable cores minus a reserve)."""
    kt, prov, host = inp.config.kt, inp.provenance, inp.host
    cpu_nodes = host.cpu_numa_nodes
    node_ids = [n.id for n in cpu_nodes]
    whence = host_sources(host)
    if (mismatch := host.memory_mismatch) is not None:
        no_mem, no_cpu = mismatch
        out.append(warning(
            "KT-W730", f"the CPUs' NUMA nodes and the memory nodes disagree on {host.source}: "
            + (f"node(s) {no_mem} have usable CPUs but their memory is withheld ({host.memory_nodes_source}: "
               f"{list(host.memory_nodes or ())}); " if no_mem else "")
            + (f"memory node(s) {no_cpu} have no usable CPU; " if no_cpu else "")
            + f"kt-kernel's pools are planned on node(s) {node_ids}, and their memory is remote where it is not bound",
            "give the container the CPUs and the memory of the same NUMA nodes (cpuset-cpus with cpuset-mems; "
            "in Kubernetes the topology manager's single-numa-node policy)"))

    # Thread pools: one per NUMA node that has usable CPUs.
    if kt.threadpool_count is not None:
        values["kt.threadpool_count"] = user_value(prov, "kt.threadpool_count", kt.threadpool_count)
    elif kt.numa_nodes:
        values["kt.threadpool_count"] = Resolved(len(kt.numa_nodes), "derived", "one pool per entry of kt.numa_nodes")
    else:
        values["kt.threadpool_count"] = Resolved(
            len(cpu_nodes), "host",
            f"one pool per NUMA node with usable CPUs ({len(cpu_nodes)} on {host.source}; {whence})")
    pools = values["kt.threadpool_count"].value

    if kt.numa_nodes is not None:
        values["kt.numa_nodes"] = user_value(prov, "kt.numa_nodes", list(kt.numa_nodes))
        missing = [n for n in kt.numa_nodes if n not in node_ids]
        if missing:
            out.append(error("KT-E104", f"kt.numa_nodes: node(s) {missing} have no usable CPUs on {host.source} "
                             f"(nodes with CPUs: {node_ids}); kt-kernel aborts on a missing node",
                             f"use node ids from {node_ids} or drop kt.numa_nodes"))
        if len(kt.numa_nodes) != pools:
            out.append(error("KT-E105", f"kt.numa_nodes has {len(kt.numa_nodes)} entries but kt.threadpool_count is "
                             f"{pools}; kt-kernel needs one node per pool", "make them the same length"))
    elif pools == len(node_ids):
        values["kt.numa_nodes"] = Resolved(node_ids, "host", f"NUMA nodes with usable CPUs, one per thread pool ({whence})")
    else:
        values["kt.numa_nodes"] = Resolved(None, "default", "kt-kernel maps pool i to NUMA node i")
        unbound = [i for i in range(pools) if i not in node_ids]
        if node_ids and unbound:
            out.append(warning("KT-W170", f"kt.threadpool_count={pools} but {host.source} has {len(node_ids)} NUMA "
                               f"node(s) with CPUs ({node_ids}); kt-kernel binds pool i to node i, so pool(s) "
                               f"{unbound} find no node (\"NUMA node N not found.\") and run unbound, their share of the "
                               "experts not local to their threads",
                               f"set kt.threadpool_count={len(node_ids)} (one pool per NUMA node), or kt.numa_nodes "
                               "with a node for each pool"))

    cores = host.usable_physical_cores
    if kt.cpuinfer is not None:
        values["kt.cpuinfer"] = user_value(prov, "kt.cpuinfer", kt.cpuinfer)
        if kt.cpuinfer > cores:
            out.append(warning("KT-W101", f"kt.cpuinfer={kt.cpuinfer} exceeds the {cores} usable physical cores on "
                               f"{host.source}; oversubscribed kt-kernel threads can make MoE layers several times slower",
                               f"try kt.cpuinfer={untuned_cpuinfer(host, pools)} or run `kt-launch tune`"))
    elif inp.tuned is not None:
        tuned = min(inp.tuned.cpuinfer, cores)
        values["kt.cpuinfer"] = Resolved(max(tuned, pools), "tuned", inp.tuned.detail)
    else:
        reserve = core_reserve(cores)
        values["kt.cpuinfer"] = Resolved(
            untuned_cpuinfer(host, pools), "host",
            f"{cores} usable physical cores ({len(host.cpu.usable_cpus)} CPUs from {host.cpus_source}) - {reserve} "
            "reserved for SGLang's scheduler and the GPU driver")
    cpuinfer = values["kt.cpuinfer"].value
    if cpuinfer < pools:
        out.append(error("KT-E106", f"kt.cpuinfer={cpuinfer} is less than kt.threadpool_count={pools}; "
                         "kt-kernel would build thread pools with no threads", f"set kt.cpuinfer to at least {pools}"))
    elif pools > 1 and cpuinfer % pools and is_user_set(prov, "kt.cpuinfer", kt.cpuinfer):
        out.append(warning("KT-W102", f"kt.cpuinfer={cpuinfer} does not divide evenly over {pools} thread pools; "
                           "the larger pools set the pace", f"use a multiple of {pools}"))
