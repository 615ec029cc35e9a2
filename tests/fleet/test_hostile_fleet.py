"""Fleet layouts and commands against hostile input (issue 23). Replicas that share a NUMA node split its CPUs by
the node's own CPU list (item 8): whatever the numbering (node 0 = 0-31,64-95, or ids alternating between
sockets, node 0 = 0,2,4,...), each replica gets an equal, disjoint share of the node's CPUs, whole physical cores
with their SMT siblings. Another host's command keeps a host name that looks like a flag a value (item 15)."""

from __future__ import annotations

import json
import sys

from hypothesis import HealthCheck, given, settings, strategies as st

from kt_launch.core.host import CpuFacts, GpuFacts, HostFacts, NumaNode
from kt_launch.resolve.fleet import HostInput, layout, split_cpus

from fleet.support import dual_socket, fleet_profile, kt_launch, write_json, write_profile

GiB = 1 << 30


def machine(sockets: int, cores: int, threads: int, alternating: bool) -> tuple[HostFacts, dict[int, int]]:
    """A host as Linux numbers it: every core's first thread before any second thread (sibling k of core c is
    c + k * sockets * cores); core c on socket c % sockets (alternating) or c // cores (blocked). Returns the
    facts and CPU id -> its physical core."""
    total = sockets * cores
    core_of = {c + k * total: c for c in range(total) for k in range(threads)}
    socket_of = (lambda c: c % sockets) if alternating else (lambda c: c // cores)
    numa = tuple(NumaNode(s, tuple(sorted(cpu for cpu, c in core_of.items() if socket_of(c) == s)), 64 * GiB)
                 for s in range(sockets))
    gpus = tuple(GpuFacts(i, "GPU", 80 * GiB, numa_node=i % sockets) for i in range(4 * sockets))
    cpu = CpuFacts("test", total, total * threads, tuple(sorted(core_of)), frozenset())
    return HostFacts(cpu, numa, sockets * 64 * GiB, sockets * 60 * GiB, gpus, local=False), core_of


@settings(max_examples=200, deadline=None)
@given(sockets=st.sampled_from([1, 2, 4]), cores=st.integers(1, 24), threads=st.sampled_from([1, 2, 4]),
       alternating=st.booleans(), split=st.sampled_from([1, 2, 4]))
def test_replicas_sharing_a_node_get_equal_disjoint_whole_cores(sockets, cores, threads, alternating, split):
    if cores % split:
        return
    facts, core_of = machine(sockets, cores, threads, alternating)
    out: list = []
    replicas = layout(HostInput("h", facts, split * sockets, "127.0.0.1", "127.0.0.1"), 30000, True, out)
    assert not [f for f in out if f.level == "error"], out
    assert len(replicas) == split * sockets
    for node in facts.numa:
        mine = [set(r.cpus) for r in replicas if r.nodes == (node.id,)]
        assert len(mine) == split
        assert set().union(*mine) == set(node.cpus), "every CPU of the node goes to one of its replicas"
        assert sum(map(len, mine)) == len(node.cpus), "no CPU goes to two replicas"
        assert {len(m) for m in mine} == {len(node.cpus) // split}, "equal shares"
        for m in mine:  # a physical core's threads stay together
            cores_here = {core_of[c] for c in m}
            assert {c for c in node.cpus if core_of[c] in cores_here} == m


def test_alternating_ids_are_split_not_given_whole_to_one_replica():
    facts, _ = machine(2, 32, 2, alternating=True)
    assert facts.numa[0].cpus[:3] == (0, 2, 4)
    out: list = []
    a, b, *_ = layout(HostInput("h", facts, 4, "127.0.0.1", "127.0.0.1"), 30000, True, out)
    assert a.cpus == tuple(range(0, 32, 2)) + tuple(range(64, 96, 2))
    assert b.cpus == tuple(range(32, 64, 2)) + tuple(range(96, 128, 2))


def test_split_without_a_core_count_is_one_slice():
    assert split_cpus([0, 2, 4, 6], 0, 2) == [0, 2] and split_cpus([0, 2, 4, 6], 1, 2) == [4, 6]
    assert split_cpus([0, 1, 2], 0, 2, cores=3) == [0, 1] and split_cpus([0, 1, 2], 1, 2, cores=3) == [2]


# -- the command for another host: values that look like flags stay values (issue 23 item 15) -------------------

FLAG_LIKE = ["--set", "--supervise", "-x", "--profile", "--fleet-host=other", "-", "--no-check", "-h"]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.one_of(st.sampled_from(FLAG_LIKE), st.from_regex(r"-{1,2}[a-z][a-z-]{0,8}", fullmatch=True)))
def test_a_host_named_like_a_flag_is_passed_as_a_value(tmp_path_factory, name):
    from kt_launch.cli import build_parser, split_passthrough, subparsers, take_sets

    tmp = tmp_path_factory.mktemp("fleet")
    write_json(tmp / "b.json", dual_socket())
    fleet = {"replicas": 0, "hosts": [{"name": name, "address": "10.0.0.12", "host_facts": "b.json"}]}
    p = write_profile(tmp, fleet_profile(sys.executable, 30000, fleet))
    done = kt_launch("--profile", str(p), "--no-check", "--dry-run", "--json", "--set", "kt.cpuinfer=4")
    assert done.returncode == 0, done.stderr
    (h,) = json.loads(done.stdout)["hosts"]
    own, passthrough = split_passthrough(list(h["argv"][1:]))
    own, sets = take_sets(own)
    args = build_parser(subparsers()).parse_args(own)
    assert (args.fleet_host, args.profile, args.supervise, args.no_check) == (name, str(p), True, True)
    assert sets == ["kt.cpuinfer=4"] and passthrough == []


def test_a_gpu_on_a_known_node_without_a_replica_is_not_called_unknown():
    """KT-W706 is for a GPU whose node is not known; one on a known node that has no usable CPUs is KT-W720,
    naming that node (issue 23 item 15)."""
    total = 3 * 8
    nodes = tuple(NumaNode(i, tuple(range(8 * i, 8 * i + 8)), 64 * GiB) for i in range(3))
    gpus = (GpuFacts(0, "GPU", 80 * GiB, numa_node=0), GpuFacts(1, "GPU", 80 * GiB, numa_node=2),
            GpuFacts(2, "GPU", 80 * GiB, numa_node=None), GpuFacts(3, "GPU", 80 * GiB, numa_node=1))
    usable = tuple(range(16))  # node 2's CPUs are outside the affinity mask: no replica there
    facts = HostFacts(CpuFacts("t", total, total, usable, frozenset()), nodes, 192 * GiB, 180 * GiB, gpus,
                      local=False)
    out: list = []
    layout(HostInput("h", facts, "per-numa", "127.0.0.1", "127.0.0.1"), 30000, True, out)
    by_code = {f.code: f.message for f in out}
    assert "GPU 1 on node 2" in by_code["KT-W720"] and "unknown" not in by_code["KT-W720"]
    assert "[2]" in by_code["KT-W706"] and "1" not in by_code["KT-W706"].split("GPU(s)")[1].split("]")[0]
