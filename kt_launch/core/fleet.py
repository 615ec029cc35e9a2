"""The fleet plan as values: replicas (one kt instance each), the router in front, the commands for other hosts.

kt-kernel serves one instance per host (its wrapper lives on TP rank 0; its CPU buffers are POSIX shared
memory opened by name), so scaling out means several instances behind a load balancer: one per NUMA node
(pinned with --kt-numa-nodes, the node's GPUs in CUDA_VISIBLE_DEVICES) and one or more per host, behind
sglang-router. Produced by resolve/fleet.py, rendered by render/fleet.py, run by run/fleet_supervise.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kt_launch.core.findings import Finding, has_errors
from kt_launch.core.plan import LaunchPlan

LOCAL = "this machine"  # how messages name the router's own host; identity is the `local` field, never this name
ROUTER_MODULE = "sglang_router.launch_router"
ROUTER_METRICS_PORT = 29000  # sglang-router 0.3.2's --prometheus-port default (router_args.py)
# A listener of this machine bound to a wildcard is reached through loopback (the supervisor's polls use it too).
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1", "[::]": "::1"}


def http_url(host: str, port: int, local: bool = True) -> str:
    """The URL of a listener. `local`: it runs on this machine, so a wildcard address is dialled on loopback
    (another host's wildcard says nothing about where to reach it; fleet.hosts refuses one). An IPv6 zone is
    written `%25` (RFC 6874): fe80::1%eth0 -> http://[fe80::1%25eth0]:port."""
    h = host.strip()
    if local:
        h = _WILDCARD.get(h, h)
    if ":" in h and not h.startswith("["):
        addr, pct, zone = h.partition("%")
        return f"http://[{addr}{'%25' + zone if pct else ''}]:{port}"
    return f"http://{h}:{port}"


@dataclass(frozen=True)
class Override:
    """A value the fleet sets for one replica before its single-instance resolve (source "derived"); None clears a
    host-wide user value that the replica's own steps derive again from its host view."""

    key: str
    value: Any
    reason: str


@dataclass(frozen=True)
class Replica:
    """One instance of the fleet, as laid out on its host before the single-instance resolve runs."""

    name: str  # numa0, numa0-1 (a node split in two), node-b/numa1
    host: str  # LOCAL (for messages) or a fleet.hosts name
    listen: str  # what it binds (--host)
    connect: str  # the address in its URL (what the router dials)
    port: int
    nodes: tuple[int, ...]  # NUMA nodes of its thread pools
    gpus: tuple[int, ...]  # GPU indices in nvidia-smi order (CUDA_VISIBLE_DEVICES with CUDA_DEVICE_ORDER=PCI_BUS_ID)
    cores: int  # usable physical cores it may use
    share: int = 1  # replicas sharing its nodes (each holds its own copy of the CPU experts)
    overrides: tuple[Override, ...] = ()
    local: bool = False  # on the router's machine (this one), listening on loopback; a field, never a name
    cpus: tuple[int, ...] = ()  # the CPUs it runs on: its share of its nodes' usable CPUs (the CPU affinity)

    @property
    def url(self) -> str:
        return http_url(self.connect, self.port, self.local)


@dataclass
class Instance:
    replica: Replica
    plan: LaunchPlan
    inputs: Any = None  # the replica's ResolveInput (its host view): `fit` sizes its rows from the same


@dataclass(frozen=True)
class RouterSpec:
    python: str
    host: str  # where it listens (server.host)
    port: int
    policy: str
    worker_urls: tuple[str, ...]
    api_key: str | None = None  # passed to the workers' auth; masked in every output
    # sglang-router 0.3.2 always serves Prometheus metrics (router_args.py: --prometheus-port 29000 on 0.0.0.0) and
    # panics when that port is taken; kt-launch names the port and binds it where the router listens.
    metrics_port: int = ROUTER_METRICS_PORT

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)


@dataclass(frozen=True)
class HostPart:
    """Another machine: the kt-launch command to run there, and its instances' URLs (for the router)."""

    name: str
    address: str
    argv: tuple[str, ...]
    urls: tuple[str, ...]


@dataclass
class FleetPlan:
    instances: list[Instance] = field(default_factory=list)
    router: RouterSpec | None = None  # None when planning one host's part (--fleet-host)
    hosts: list[HostPart] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.findings) and all(i.plan.ok for i in self.instances)
