"""A NUMA node without memory (issue 23 item 12): host facts keep "unknown" (null) apart from "none" (0), and each
reader acts on the difference: no `numactl --membind` to a node without memory, no share of RAM invented for it,
a thread pool there is a warning, a replica whose nodes have none an error. Unknown sizes keep the even split."""

from __future__ import annotations

import json
import sys

import pytest

from kt_launch.core.fleet import Replica
from kt_launch.core.host import CpuFacts, HostFacts, NumaNode
from kt_launch.facts.host import gather_host, host_from_json
from kt_launch.resolve.fleet import HostInput, host_view, layout
from kt_launch.run.placement import plan_placements

from fleet.support import dual_socket, fleet_profile
from fleet.test_planner import codes, messages, plan

GiB = 1 << 30


def facts(sizes: list[int | None], total: int = 256 * GiB) -> HostFacts:
    nodes = tuple(NumaNode(i, tuple(range(8 * i, 8 * i + 8)), s) for i, s in enumerate(sizes))
    cpu = CpuFacts("test", 8 * len(sizes), 8 * len(sizes), tuple(range(8 * len(sizes))), frozenset())
    return HostFacts(cpu, nodes, total, total, (), local=False)


@pytest.mark.parametrize("sizes", [[0, 128 * GiB], [128 * GiB, 0], [0, 0, 64 * GiB], [64 * GiB, 0, 64 * GiB, 0]])
def test_no_membind_to_a_node_without_memory(sizes):
    f = facts(sizes)
    replicas = [Replica(f"numa{i}", "local", "127.0.0.1", "127.0.0.1", 30001 + i, (i,), (), 8, 1,
                        cpus=tuple(range(8 * i, 8 * i + 8))) for i in range(len(sizes))]
    replicas.append(Replica("all", "local", "127.0.0.1", "127.0.0.1", 31000, tuple(range(len(sizes))), (), 8, 1))
    placed, _ = plan_placements(replicas, f, set(range(64)), numactl=True, present_nodes=set(range(len(sizes))))
    for r, p in zip(replicas, placed):
        assert not {n for n in p.membind if sizes[n] == 0}, (r.nodes, p.membind)
        assert set(p.membind) == {n for n in r.nodes if sizes[n] != 0}
        if len(p.membind) < len(r.nodes):
            assert any("no memory" in note for note in p.notes), p.notes
        if not p.membind:
            assert p.wrap(["x"]) == ["x"]


def test_unknown_node_memory_is_still_bound_and_split_evenly():
    f = facts([None, None])
    r = Replica("numa1", "local", "127.0.0.1", "127.0.0.1", 30002, (1,), (), 8, 1)
    placed, _ = plan_placements([r], f, set(range(16)), numactl=True, present_nodes={0, 1})
    assert placed[0].membind == (1,)
    assert host_view(f, r).memory_total_bytes == 128 * GiB  # the host's 256 GiB over 2 nodes


def test_a_replica_gets_its_nodes_known_memory_never_an_invented_share():
    f = facts([0, 200 * GiB], total=200 * GiB)
    both = Replica("numa0-1", "local", "127.0.0.1", "127.0.0.1", 30001, (0, 1), (), 16, 1)
    assert host_view(f, both).memory_total_bytes == 200 * GiB
    out: list = []
    got = layout(HostInput("h", f, "per-numa", "127.0.0.1", "127.0.0.1"), 30000, True, out)
    assert [r.nodes for r in got] == [(1,)]
    assert [x.code for x in out if x.level == "error"] == ["KT-E720"] and "NUMA node 0" in out[0].message


def test_a_plan_refuses_a_replica_on_a_node_without_memory(tmp_path):
    host = dual_socket()
    host["numa"][1]["memory_bytes"] = 0
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000), host)
    assert rc == 3 and "KT-E720" in codes(doc, "error")
    assert "NUMA node 1" in messages(doc, "KT-E720")[0]
    rc, doc = plan(tmp_path, fleet_profile(sys.executable, 30000, {"replicas": 1}), host)
    assert rc == 0 and "KT-E720" not in codes(doc)


def test_host_facts_keep_unknown_apart_from_none():
    doc = dual_socket()
    doc["numa"][0]["memory_bytes"] = None
    doc["numa"][1]["memory_bytes"] = 0
    h = host_from_json(json.loads(json.dumps(doc)))
    assert [n.memory_bytes for n in h.numa] == [None, 0] and h.numa[1].memoryless and not h.numa[0].memoryless
    del doc["numa"][0]["memory_bytes"]
    assert host_from_json(doc).numa[0].memory_bytes is None
    assert host_from_json(h.to_json()).numa == h.numa  # round trip through doctor --json
    doc["numa"][0]["memory_bytes"] = 0  # every node 0: a file recorded when 0 meant unknown
    assert [n.memory_bytes for n in host_from_json(doc).numa] == [None, None]


def test_gathered_node_memory_none_when_unreadable_zero_when_the_kernel_says_so(tmp_path):
    base = tmp_path / "sys/devices/system/node"
    for i, meminfo in enumerate([None, "Node 1 MemTotal:       0 kB\n", "Node 2 MemTotal:    1024 kB\n"]):
        (base / f"node{i}").mkdir(parents=True)
        (base / f"node{i}" / "cpulist").write_text(f"{i}\n")
        if meminfo is not None:
            (base / f"node{i}" / "meminfo").write_text(meminfo)
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    assert [n.memory_bytes for n in h.numa] == [None, 0, 1 << 20]


@pytest.mark.parametrize("sizes,warned", [([0, 64 * GiB], [0]), ([64 * GiB, 0], [1]), ([None, None], []),
                                          ([64 * GiB, 64 * GiB], [])])
def test_a_thread_pool_on_a_node_without_memory_is_a_warning(tmp_path, sizes, warned):
    from devtools import synthetic
    from preflight.support import host as preflight_host, check

    root = tmp_path / "t"
    synthetic.demo(root)
    host = preflight_host(numa=2)
    for node, size in zip(host["numa"], sizes):
        node["memory_bytes"] = size
    rc, doc, err = check(tmp_path, synthetic.amx_profile(root, kt={"threadpool_count": 2, "numa_nodes": [0, 1]}),
                         host)
    found = [f for f in doc["findings"] if f["code"] == "KT-W150"]
    assert [int(f["message"].split()[2]) for f in found] == warned, (doc["findings"], err)
    nodes = doc["memory"]["ram"]["nodes"]
    assert [n["total_bytes"] for n in nodes] == sizes
