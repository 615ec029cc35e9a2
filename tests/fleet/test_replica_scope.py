"""How a fleet replica gets each key is its registry row's `replica_scope` (issue 27 item 3), one rule per scope:
a host-wide user value of a "derived" key (kt.cpuinfer, kt.threadpool_count, kt.numa_nodes) is cleared for every
replica, which derives its own on its NUMA node, and KT-W712 names it. Measured before: `--set kt.cpuinfer=60`
reached both replicas of a 2-node fleet unchanged while kt.threadpool_count was cleared. And a replica's host view
is a whole HostFacts of its node: a step reading cpu.physical_cores saw the whole machine."""

from __future__ import annotations

import sys

import pytest

from kt_launch.core.options import BY_KEY, OPTIONS, REPLICA_SCOPES
from kt_launch.resolve.fleet import replica_overrides

from fleet.support import fleet_profile

from fleet.test_planner import flag, messages, plan

DERIVED = [o.key for o in OPTIONS if o.replica_scope == "derived"]
# A host-wide value a user might write for each derived key of the dual-socket host (32 cores per node)
HOST_WIDE = {"kt.cpuinfer": 60, "kt.threadpool_count": 2, "kt.numa_nodes": [0, 1]}
FLAGS = {"kt.cpuinfer": "--kt-cpuinfer", "kt.threadpool_count": "--kt-threadpool-count",
         "kt.numa_nodes": "--kt-numa-nodes"}
OWN = {"kt.cpuinfer": "30", "kt.threadpool_count": "1"}  # each node's own: 32 physical cores - 2, one pool


def test_every_scope_is_declared_and_every_derived_key_is_tested():
    assert {o.replica_scope for o in OPTIONS} - {None} <= set(REPLICA_SCOPES)
    assert set(DERIVED) == set(HOST_WIDE) == set(FLAGS)


@pytest.mark.parametrize("key", DERIVED)
def test_a_host_wide_value_of_a_per_replica_key_is_derived_per_replica(tmp_path, key):
    section, name = key.split(".")
    profile = fleet_profile(sys.executable, 30000)
    profile.setdefault(section, {})[name] = HOST_WIDE[key]
    if key == "kt.numa_nodes":
        profile["kt"]["threadpool_count"] = 2  # a whole-host pair, as one instance would take it
    rc, doc = plan(tmp_path, profile)
    assert rc == 0, doc
    for node, inst in enumerate(doc["instances"]):
        r = inst["resolved"][key]
        assert r["source"] in ("derived", "host"), (key, r)
        want = OWN.get(key, str(node))
        assert flag(inst["argv"], FLAGS[key]) == want, (key, inst["argv"])
    assert any(key in m for m in messages(doc, "KT-W712")), key


def test_every_key_the_fleet_sets_per_replica_has_a_scope():
    from kt_launch.core.fleet import Replica
    from kt_launch.resolve.inputs import ResolveInput  # noqa: F401  (the input replica_overrides reads)
    from types import SimpleNamespace

    r = Replica("numa0", "this machine", "127.0.0.1", "127.0.0.1", 30001, (0,), (0, 1), 30, 1, local=True)
    cfg = SimpleNamespace(server=SimpleNamespace(tp_size=None, port=30000))
    for o in replica_overrides(SimpleNamespace(config=cfg), r):
        assert BY_KEY[o.key].replica_scope is not None, o.key


def test_a_replica_host_view_is_its_node(tmp_path):
    """Every CPU field of a replica's host is its node's: cores, logical CPUs, NUMA entries."""
    from kt_launch.core.host import CpuFacts, HostFacts, NumaNode
    from kt_launch.core.fleet import Replica
    from kt_launch.resolve.fleet import host_view

    nodes = tuple(NumaNode(i, tuple(range(i * 64, (i + 1) * 64)), 512 << 30) for i in (0, 1))
    facts = HostFacts(CpuFacts("x", 64, 128, tuple(range(128)), frozenset({"avx2"})), nodes, 1024 << 30, 960 << 30)
    r = Replica("numa1", "this machine", "127.0.0.1", "127.0.0.1", 30002, (1,), (), 32, 1, local=True,
                cpus=tuple(range(64, 128)))
    v = host_view(facts, r)
    assert v.cpu.physical_cores == 32 and v.usable_physical_cores == 32 and v.cpu.logical_cpus == 64
    assert [n.id for n in v.numa] == [1] and [n.id for n in v.cpu_numa_nodes] == [1]
    assert set(v.cpu.usable_cpus) == set(range(64, 128)) and v.memory_total_bytes == 512 << 30
