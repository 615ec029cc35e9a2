"""The fleet planner (pure): lay replicas out over NUMA nodes and hosts, then run the single-instance resolve
for each one with the values the fleet derives (threads, pools, GPUs, port), so every rule of a single instance
(threads, RAM for the CPU experts, GPUs for tp_size, AMX NUMA partitions, flavour) is checked per replica.

Layout, per host (`replicas`): `per-numa` (or null) = one replica per NUMA node that has usable CPUs; N that
divides the node count = replicas spanning nodes/N nodes each (one pool per node); N a multiple of the node count
= each node split into N/nodes replicas (its cores and GPUs divided, and one more copy of the CPU experts in its
RAM each); 0 = none (a router-only machine). GPUs go to the replica of the node their PCI device is attached to.

Ports: the router listens on fleet.router.port (default server.port) at server.host; the k-th replica of a host
(k = 1, 2, ...) listens on server.port + k. Local replicas listen on loopback: only the router talks to them;
those of another host listen on that host's fleet.hosts[].address.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.fleet import ROUTER_METRICS_PORT, FleetPlan, HostPart, Instance, Override, Replica, RouterSpec
from kt_launch.core.host import GpuFacts, HostFacts, NumaNode
from kt_launch.core.install import SGLANG_ROUTER, pip_line
from kt_launch.core.options import BY_KEY, OPTIONS, Flag
from kt_launch.core.provenance import Origin, Provenance
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.pipeline import resolve
from kt_launch.resolve.ports import port_verdict


# Keys each replica derives on its own host view (Option.replica_scope "derived"): a user value for them means "for
# the whole host"; it is cleared for every replica and named (KT-W712).
DERIVED_PER_REPLICA = tuple(o.key for o in OPTIONS if o.replica_scope == "derived")


@dataclasses.dataclass(frozen=True)
class HostInput:
    """One host of the fleet as the planner sees it: its facts and its entry."""

    name: str  # LOCAL (for messages) or the fleet.hosts name
    facts: HostFacts
    replicas: Any  # "per-numa" | int | None
    listen: str
    connect: str
    visible: str | None = None  # a CUDA_VISIBLE_DEVICES restriction (indices or UUIDs), None = every GPU
    local: bool = False  # the router's own machine (this one): replicas on loopback, no command to print


# -- layout -----------------------------------------------------------------------------------------

def visible_gpus(gpus: tuple[GpuFacts, ...], spec: str | None) -> tuple[GpuFacts, ...]:
    """The GPUs a CUDA_VISIBLE_DEVICES value names (indices or UUID prefixes, CUDA's order and rules),
    keeping nvidia-smi's indices: each replica's own CUDA_VISIBLE_DEVICES is built from them."""
    if spec is None:
        return gpus
    out: list[GpuFacts] = []
    for item in [x.strip() for x in spec.split(",") if x.strip()]:
        if item.lstrip("-").isdigit():
            match = next((g for g in gpus if len(item) <= 18 and g.index == int(item)), None)
        else:
            match = next((g for g in gpus if g.uuid and g.uuid.startswith(item)), None)
        if match is None:
            break  # CUDA stops at the first entry it cannot use
        out.append(match)
    return tuple(out)


def node_cores(host: HostFacts, node: NumaNode) -> int:
    """Usable physical cores of one node: the host's usable physical cores in proportion to the node's usable
    logical CPUs (host facts record physical cores per host, CPUs per node)."""
    usable = set(host.cpu.usable_cpus) or set(range(host.cpu.logical_cpus))
    mine = len(usable & set(node.cpus))
    return max(1, round(host.usable_physical_cores * mine / max(1, len(usable))))


def _node_label(nodes: tuple[int, ...]) -> str:
    return f"NUMA node {nodes[0]}" if len(nodes) == 1 else f"NUMA nodes {','.join(map(str, nodes))}"


def _gpus_by_node(h: HostInput, nodes: list[NumaNode], out: list[Finding]) -> dict[int, list[GpuFacts]]:
    gpus = visible_gpus(h.facts.gpus, h.visible)
    by_node: dict[int, list[GpuFacts]] = {n.id: [] for n in nodes}
    unknown, elsewhere = [], []  # node not known; node known but without a replica (no usable CPUs there)
    for g in gpus:
        if len(nodes) == 1:
            by_node[nodes[0].id].append(g)
        elif g.numa_node in by_node:
            by_node[g.numa_node].append(g)
        else:
            (unknown if g.numa_node is None else elsewhere).append(g)
    for g in unknown + elsewhere:  # dealt out in index order to the nodes with the fewest GPUs
        target = min(by_node, key=lambda n: (len(by_node[n]), n))
        by_node[target].append(g)
    if elsewhere:
        attached = ", ".join(f"GPU {g.index} on node {g.numa_node}" for g in elsewhere)
        out.append(warning("KT-W720", f"{h.name}: {attached}: no replica runs there (that node has no usable CPUs "
                           f"here; replicas are on {_node_label(tuple(by_node))}); they were given to the nodes with "
                           "the fewest GPUs, in index order, and reach them across the interconnect",
                           "pick GPUs with runtime.cuda_visible_devices, or widen kt-launch's CPU affinity to "
                           "that node"))
    if unknown:
        out.append(warning("KT-W706", f"{h.name}: the NUMA node of GPU(s) {[g.index for g in unknown]} is unknown "
                           f"(host facts recorded before kt-launch read it, or the platform reports none); they were "
                           "given to the nodes with the fewest GPUs, in index order",
                           "re-record the host facts with `kt-launch doctor --json`, or pick GPUs with "
                           "runtime.cuda_visible_devices"))
    return by_node


def _part(run: list[int], j: int, k: int) -> list[int]:
    size, extra = divmod(len(run), k)
    start = j * size + min(j, extra)
    return run[start:start + size + (1 if j < extra else 0)]


def node_cpus(facts: HostFacts, nodes: tuple[int, ...]) -> list[int]:
    """The usable CPUs of these NUMA nodes."""
    usable = set(facts.cpu.usable_cpus)
    return [c for n in facts.numa if n.id in nodes for c in n.cpus if not usable or c in usable]


def split_cpus(cpus: list[int], j: int, k: int, cores: int | None = None) -> list[int]:
    """Part j of k of a node's own CPU list (sorted ids, whatever their spacing: 0-31,64-95 or 0,2,4,...).

    Linux numbers every core's first thread before any core's second one, so a node's sorted list of `cores`
    physical cores is slices of `cores` ids, one thread of every core each, in the same core order (0-31 then
    their siblings 64-95; or 0,2,..,62 then 64,66,..,126 where ids alternate between sockets). Replica j gets
    the same part of every slice: whole physical cores with their siblings, never another replica's sibling
    threads. `cores` None or 0: one slice."""
    ids = sorted(set(cpus))
    size = min(cores, len(ids)) if cores else len(ids)
    return [c for s in range(0, len(ids), max(1, size)) for c in _part(ids[s:s + size], j, k)]


def layout(h: HostInput, base_port: int, allow_cpu_only: bool, out: list[Finding]) -> list[Replica]:
    """The replicas of one host (no overrides yet), or [] with error findings that name the node."""
    nodes = list(h.facts.cpu_numa_nodes)
    want = h.replicas
    if want == 0:
        return []
    m = len(nodes)
    if want is None or want == "per-numa":
        groups, split = [(n,) for n in nodes], 1
        if m == 1 and h.local:
            out.append(info("KT-I713", f"{h.name} has one NUMA node with CPUs: the fleet here is one replica "
                            "behind the router", "add fleet.hosts, or set fleet.replicas to split the node"))
    elif want % m == 0:
        groups, split = [(n,) for n in nodes], want // m
    elif m % want == 0:
        k = m // want
        groups, split = [tuple(nodes[i:i + k]) for i in range(0, m, k)], 1
    else:
        out.append(error("KT-E701", f"{h.name}: replicas={want} does not divide over its {m} NUMA nodes with CPUs "
                         f"({[n.id for n in nodes]})", f"use per-numa, a divisor of {m}, or a multiple of {m}"))
        return []
    by_node = _gpus_by_node(h, nodes, out)
    replicas: list[Replica] = []
    for group in groups:
        ids = tuple(n.id for n in group)
        where = f"{h.name}, {_node_label(ids)}"
        cores = sum(node_cores(h.facts, n) for n in group)
        gpus = [g for n in group for g in by_node[n.id]]
        if cores % split:
            out.append(error("KT-E702", f"{where}: {cores} usable physical cores do not divide into {split} replicas",
                             f"use a number of replicas that divides {cores} per node, or per-numa"))
            continue
        if all(n.memoryless for n in group):
            out.append(error("KT-E720", f"{where} has no memory of its own (its host facts say 0 bytes): a replica "
                             "there would hold its copy of the CPU experts in other nodes' RAM, which their replicas "
                             "fill, and cannot be bound to it with numactl",
                             "set fleet.replicas so that each replica spans a node with memory (e.g. replicas: 1)"))
            continue
        if len(gpus) % split:
            out.append(error("KT-E703", f"{where}: its {len(gpus)} GPU(s) ({[g.index for g in gpus]}) do not divide "
                             f"into {split} replicas", "use per-numa, or a number of replicas per node that divides "
                             "its GPUs"))
            continue
        if not gpus and not allow_cpu_only:
            others = sorted({g.numa_node for g in h.facts.gpus if g.numa_node is not None})
            out.append(error("KT-E704", f"{where} has no GPU for its replica"
                             + (f" (the GPUs are on NUMA node(s) {others})" if others else " (no GPU is seen there)"),
                             "set fleet.replicas so that replicas span nodes with GPUs (e.g. replicas: 1), or "
                             "fleet.allow_cpu_only: true to run that replica without a GPU"))
            continue
        per = len(gpus) // split
        for j in range(split):
            name = f"numa{ids[0]}" if len(ids) == 1 else f"numa{ids[0]}-{ids[-1]}"
            if split > 1:
                name += f".{j}"
            if not h.local:
                name = f"{h.name}/{name}"
            port = base_port + 1 + len(replicas)
            replicas.append(Replica(name, h.name, h.listen, h.connect, port, ids,
                                    tuple(g.index for g in gpus[j * per:(j + 1) * per]), cores // split, split,
                                    local=h.local, cpus=tuple(split_cpus(node_cpus(h.facts, ids), j, split, cores))))
    if split > 1 and replicas:
        out.append(warning("KT-W705", f"{h.name}: {split} replicas share each NUMA node: each loads its own copy of "
                           "the CPU experts into that node's RAM, and kt-kernel pins each one's threads to the whole "
                           "node, so they also share its cores", "prefer per-numa; split a node only when its RAM "
                           "holds that many copies"))
    return replicas


# -- per-replica values and resolve -----------------------------------------------------------------

def replica_overrides(inp: ResolveInput, r: Replica) -> tuple[Override, ...]:
    server = inp.config.server
    where = f"{r.host}, {_node_label(r.nodes)}" + (f" (1 of {r.share} replicas there)" if r.share > 1 else "")
    # Pools, their nodes and kt.cpuinfer (replica_scope "derived") come from the same threads step as for one
    # instance, run on the host as the replica sees it (host_view: its nodes' CPUs and cores); the fleet only clears
    # a host-wide user value for them, every one the same way.
    ov = [Override(key, None, f"fleet: each replica's own, from its NUMA node(s) {_node_label(r.nodes)}")
          for key in DERIVED_PER_REPLICA]
    if server.tp_size is None and r.gpus:
        ov.append(Override("server.tp_size", len(r.gpus), f"fleet: the {len(r.gpus)} GPU(s) attached to {where}"))
    ov.append(Override("runtime.cuda_visible_devices", ",".join(map(str, r.gpus)),
                       f"fleet: GPUs of {where} (nvidia-smi indices)" if r.gpus else
                       f"fleet: {where} has no GPU (fleet.allow_cpu_only)"))
    ov.append(Override("server.port", r.port, f"fleet: instance port = server.port + {r.port - server.port}"))
    ov.append(Override("server.host", r.listen, "fleet: loopback, only the router talks to it" if r.local else
                       f"fleet: the address of {r.host} (fleet.hosts) that the router dials"))
    return tuple(ov)


def host_view(facts: HostFacts, r: Replica) -> HostFacts:
    """The host as one replica sees it, whole: its nodes only (their CPUs, physical and logical, and their NUMA
    entries), its share of their RAM, its GPUs (renumbered as CUDA numbers what CUDA_VISIBLE_DEVICES leaves). A step
    that reads any CPU field sees the replica, not the machine. The source names the node, so every message does."""
    node_ids = set(r.nodes)
    nodes = [n for n in facts.numa if n.id in node_ids]
    usable = set(facts.cpu.usable_cpus)
    cpus = tuple(c for n in nodes for c in n.cpus if not usable or c in usable)
    if all(n.memory_bytes is not None for n in nodes):  # known (a node without memory adds 0; layout refuses
        node_mem = sum(n.memory_bytes or 0 for n in nodes)  # a replica whose nodes all have none, KT-E720)
    else:  # some node's size unknown: an even split of the host over its nodes with CPUs
        node_mem = facts.memory_total_bytes * len(nodes) // max(1, len(facts.cpu_numa_nodes))
    mem = node_mem // r.share
    avail = facts.memory_available_bytes * mem // facts.memory_total_bytes if facts.memory_total_bytes else 0
    by_index = {g.index: g for g in facts.gpus}
    gpus = tuple(dataclasses.replace(by_index[i], index=k) for k, i in enumerate(r.gpus))
    cpus = cpus or facts.cpu.usable_cpus
    cpu = dataclasses.replace(facts.cpu, physical_cores=r.cores, logical_cpus=len(r.cpus or cpus), usable_cpus=cpus,
                              usable_physical_cores=r.cores)
    share = f" ({r.share} replicas share it: its RAM / {r.share})" if r.share > 1 else ""
    return HostFacts(cpu, tuple(nodes) or facts.numa, mem, avail, gpus, source=f"{facts.source}, {_node_label(r.nodes)}{share}",
                     local=False)  # the fleet checks its replicas' ports itself (KT-E708)


def replica_input(inp: ResolveInput, facts: HostFacts, r: Replica) -> ResolveInput:
    """The single-instance input of one replica: the profile with the fleet's values applied (with provenance
    "derived" and the reason), the fleet section gone, the host as the replica sees it."""
    cfg = inp.config
    sections: dict[str, dict[str, Any]] = {}
    origins = dict(inp.provenance.origins)
    for o in r.overrides:
        section, name = o.key.split(".", 1)
        sections.setdefault(section, {})[name] = o.value
        for k in [k for k in origins if k == o.key or k.startswith(o.key + ".")]:
            del origins[k]
        if o.value is not None:  # None clears a host-wide value: the replica's steps derive their own
            origins[o.key] = Origin("derived", o.reason)
    update: dict[str, Any] = {s: getattr(cfg, s).model_copy(update=v) for s, v in sections.items()}
    update["fleet"] = None
    return dataclasses.replace(inp, config=cfg.model_copy(update=update), provenance=Provenance(origins),
                               host=host_view(facts, r), tuned=None)


def _pin_findings(inst: Instance) -> list[Finding]:
    r, plan = inst.replica, inst.plan
    if isinstance(BY_KEY["kt.numa_nodes"].render.get(plan.flavor), Flag) or r.nodes == tuple(range(len(r.nodes))):
        return []
    return [error("KT-E709", f"{r.name}: runtime.flavor {plan.flavor} has no --kt-numa-nodes, so its pools run on "
                  f"NUMA nodes 0.. and cannot be pinned to {_node_label(r.nodes)}",
                  "use runtime.flavor: sglang-kt, or fleet.replicas: 1")]


# -- the fleet ---------------------------------------------------------------------------------------

def resolve_fleet(inp: ResolveInput, hosts: list[HostInput], *, router_python: str | None,
                  host_commands: dict[str, tuple[str, ...]] | None = None, with_router: bool = True) -> FleetPlan:
    """Plan every replica of `hosts` (resolved one by one) and the router in front of them.

    `host_commands`: fleet.hosts name -> the kt-launch argv to run there; `with_router`: False when planning one
    host's part (--fleet-host), which has no router."""
    fleet, server = inp.config.fleet, inp.config.server
    findings: list[Finding] = []
    for key in DERIVED_PER_REPLICA:
        if inp.provenance.of(key) is not None:
            section, name = key.split(".", 1)
            if getattr(getattr(inp.config, section), name) is not None:
                findings.append(warning("KT-W712", f"{key} is set, but in a fleet each replica gets its own (see the "
                                        "per-replica values)", f"remove {key} from the profile"))
    if inp.config.runtime.cuda_visible_devices is not None:
        findings.append(info("KT-I714", "runtime.cuda_visible_devices limits which GPUs of this machine the fleet "
                             "uses; each replica gets its node's share of them"))
    instances: list[Instance] = []
    parts: list[HostPart] = []
    for h in hosts:
        replicas = layout(h, server.port, fleet.allow_cpu_only, findings)
        for r in replicas:
            r = dataclasses.replace(r, overrides=replica_overrides(inp, r))
            rinp = replica_input(inp, h.facts, r)
            local = h.local or not with_router  # --fleet-host: every host given is this machine
            rinp = dataclasses.replace(rinp, launch_here=inp.launch_here and local,
                                       gpu_required=not fleet.allow_cpu_only,
                                       # another host's server inherits that host's environment, not this one's
                                       inherited_cpu_variant=inp.inherited_cpu_variant if local else None)
            inst = Instance(r, resolve(rinp), rinp)
            inst.plan.findings[:0] = _pin_findings(inst)
            instances.append(inst)
        if not h.local:
            parts.append(HostPart(h.name, h.connect, (host_commands or {}).get(h.name, ()),
                                  tuple(r.url for r in replicas)))
    if not instances:
        findings.append(error("KT-E711", "the fleet has no instance (fleet.replicas: 0 and no fleet.hosts, or every "
                              "host failed to plan)", "set fleet.replicas, or add fleet.hosts"))
    router = None
    if with_router:
        port = fleet.router.port or server.port
        router = RouterSpec(router_python or "python3", server.host, port, fleet.router.policy,
                            tuple(i.replica.url for i in instances), server.api_key,
                            fleet.router.metrics_port or ROUTER_METRICS_PORT)
    findings += _port_findings(listeners(instances, router, every=not with_router))
    return FleetPlan(instances, router, parts, findings)


def listeners(instances: list[Instance], router: RouterSpec | None, every: bool) -> list[tuple[str, str, int]]:
    """(name, address, port) of everything the plan starts on this machine: the router and the local replicas,
    or `every` replica (one host's part, --fleet-host, runs here whole)."""
    out = [(i.replica.name, i.replica.listen, i.replica.port) for i in instances if every or i.replica.local]
    if router is not None:
        out[:0] = [("the router", router.host, router.port), ("the router's metrics", router.host, router.metrics_port)]
    return out


def busy_port_findings(items: list[tuple[str, str, int]], status: dict[tuple[str, int], str]) -> list[Finding]:
    """`status`: (address, port) -> what a bind there found now (facts/artifacts.probe_port)."""
    out = []
    for name, address, port in items:
        v = port_verdict(status.get((address, port)))
        if v is not None:
            out.append(error("KT-E708", f"{name}: port {port} on {address} {v.why}",
                             f"{v.fix} (a fleet's instances take the ports after server.port)"))
    return out


def _port_findings(listeners: list[tuple[str, str, int]]) -> list[Finding]:
    out = []
    for name, _, port in listeners:
        if not 1 <= port <= 65535:
            out.append(error("KT-E707", f"{name}: port {port} is outside 1-65535 (instances use server.port + 1, "
                             "+ 2, ...)", "lower server.port"))
    seen: dict[int, str] = {}
    for name, _, port in listeners:
        if port in seen:
            out.append(error("KT-E190", f"{name} and {seen[port]} would both listen on port {port} of this machine",
                             "move fleet.router.port away from server.port + 1 .. + replicas"))
        seen.setdefault(port, name)
    return out


def router_missing(python: str) -> Finding:
    """KT-W710: the router's interpreter has no sglang-router (facts/router.router_importable said so)."""
    return warning("KT-W710", f"fleet.router.python {python} has no sglang-router; --supervise cannot start the "
                   "router", f"{router_install_line(python)}, or set fleet.router.python to an interpreter that has it")


def router_install_line(python: str) -> str:
    """The exact command that installs the router kt-launch renders for into `python` (kt-launch's own extras are
    not on the package index, and that interpreter usually lacks kt-launch)."""
    return pip_line(python, SGLANG_ROUTER)
