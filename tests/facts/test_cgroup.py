"""Usable CPUs and memory NUMA nodes from the process's cgroup: recorded /proc and /sys trees (cgroup v2, v1,
/proc/self/status only) and, where the test runs as root and may create one, a real cgroup."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kt_launch.core.fleet import Replica
from kt_launch.facts.cgroup import read_cgroup
from kt_launch.facts.host import gather_host, host_from_json
from kt_launch.run.placement import plan_placements

REPO = Path(__file__).resolve().parents[2]
SEED_PROFILE = REPO / "configs" / "deepseek-v2-lite-lora.yaml"


def _two_node_host(root: Path) -> None:
    """A 2-socket host, 4 cores per node, no SMT: node 0 = CPUs 0-3, node 1 = CPUs 4-7, 64 GiB each."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text("".join(
        f"processor\t: {c}\nmodel name\t: Test 2S\nphysical id\t: {c // 4}\ncore id\t\t: {c % 4}\n"
        "flags\t\t: fpu avx2\n\n" for c in range(8)))
    (root / "proc/meminfo").write_text("MemTotal:       134217728 kB\nMemAvailable:   125829120 kB\n")
    for c in range(8):
        t = root / f"sys/devices/system/cpu/cpu{c}/topology"
        t.mkdir(parents=True)
        (t / "physical_package_id").write_text(f"{c // 4}\n")
        (t / "core_id").write_text(f"{c % 4}\n")
    for n in (0, 1):
        d = root / f"sys/devices/system/node/node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(f"{4 * n}-{4 * n + 3}\n")
        (d / "meminfo").write_text(f"Node {n} MemTotal:       67108864 kB\n")


def _pod_v2(root: Path, cpus: str, mems: str, quota: str = "max 100000") -> None:
    """A Kubernetes pod's container cgroup on v2 (no cgroup namespace: the path is the host's)."""
    path = "kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope"
    (root / "proc/self/cgroup").write_text(f"0::/{path}\n")
    (root / "proc/self/status").write_text("Name:\tkt\nCpus_allowed_list:\t0-7\nMems_allowed_list:\t0-1\n")
    d = root / "sys/fs/cgroup" / path
    d.mkdir(parents=True)
    (d / "cpuset.cpus.effective").write_text(cpus + "\n")
    (d / "cpuset.mems.effective").write_text(mems + "\n")
    (d / "cpu.max").write_text(quota + "\n")


def test_pod_with_node_1_only_plans_and_binds_node_1(tmp_path):
    _two_node_host(tmp_path)
    _pod_v2(tmp_path, "4-7", "1", "400000 100000")
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    assert h.cpu.usable_cpus == (4, 5, 6, 7) and h.cpus_source == "cgroup cpuset.cpus.effective"
    assert h.memory_nodes == (1,) and h.memory_nodes_source == "cgroup cpuset.mems.effective"
    assert [n.id for n in h.cpu_numa_nodes] == [1] and h.usable_physical_cores == 4
    assert h.memory_mismatch is None

    # the plan: one pool on node 1, cpuinfer from the pod's 4 cores, each sourced from the cgroup
    from core.support import plan_for
    plan = plan_for(SEED_PROFILE, host=h.to_json())
    v = plan.values
    assert v["kt.numa_nodes"].value == [1] and v["kt.threadpool_count"].value == 1
    assert "cgroup cpuset.mems.effective" in v["kt.numa_nodes"].reason
    assert "cgroup cpuset.cpus.effective" in v["kt.cpuinfer"].reason and v["kt.cpuinfer"].value == 3
    assert not any(f.code == "KT-W730" for f in plan.findings)

    # the membind of a replica on node 1 is node 1
    places, _ = plan_placements([_replica((1,), (4, 5, 6, 7))], h, {4, 5, 6, 7}, True, {0, 1})
    assert places[0].membind == (1,) and places[0].cpus == frozenset({4, 5, 6, 7})


def _replica(nodes, cpus):
    return Replica(name="r0", host="local", listen="127.0.0.1", connect="127.0.0.1", port=30001, nodes=nodes,
                   gpus=(), cores=len(cpus), cpus=cpus)


def test_membind_skips_a_node_the_cgroup_withholds(tmp_path):
    _two_node_host(tmp_path)
    _pod_v2(tmp_path, "0-7", "1")
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    places, _ = plan_placements([_replica((0,), (0, 1, 2, 3))], h, set(range(8)), True, {0, 1})
    assert places[0].membind == ()
    assert any("not among the memory nodes" in n and "cpuset.mems.effective" in n for n in places[0].notes)


def test_cpus_on_both_nodes_memory_on_one_is_a_finding(tmp_path):
    _two_node_host(tmp_path)
    _pod_v2(tmp_path, "0-7", "1")
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    assert h.memory_mismatch == ([0], [])
    assert [n.id for n in h.cpu_numa_nodes] == [1]  # node 0's memory is withheld: no pool there
    from core.support import plan_for
    plan = plan_for(SEED_PROFILE, host=h.to_json())
    w = [f for f in plan.findings if f.code == "KT-W730"]
    assert len(w) == 1 and w[0].level == "warning" and "[0]" in w[0].message
    assert plan.values["kt.numa_nodes"].value == [1]


def test_cgroup_v1_and_status_fallbacks(tmp_path):
    _two_node_host(tmp_path)
    (tmp_path / "proc/self/cgroup").write_text("3:cpuset:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n")
    (tmp_path / "proc/self/status").write_text("Cpus_allowed_list:\t0-7\nMems_allowed_list:\t0-1\n")
    d = tmp_path / "sys/fs/cgroup/cpuset"  # no cgroup namespace: the container's own cpuset is the mount root
    d.mkdir(parents=True)
    (d / "cpuset.effective_cpus").write_text("0-3\n")
    (d / "cpuset.effective_mems").write_text("0\n")
    q = tmp_path / "sys/fs/cgroup/cpu"
    q.mkdir(parents=True)
    (q / "cpu.cfs_quota_us").write_text("200000\n")
    (q / "cpu.cfs_period_us").write_text("100000\n")
    v = read_cgroup(tmp_path)
    assert (v.cpus, v.cpus_source) == ((0, 1, 2, 3), "cgroup v1 cpuset.effective_cpus")
    assert (v.mems, v.mems_source) == ((0,), "cgroup v1 cpuset.effective_mems") and v.quota_cpus == 2

    for f in ("cpuset.effective_cpus", "cpuset.effective_mems"):
        (d / f).unlink()
    v = read_cgroup(tmp_path)
    assert (v.mems, v.mems_source) == ((0, 1), "/proc/self/status Mems_allowed_list")
    assert v.cpus_source == "/proc/self/status Cpus_allowed_list"


def test_a_climbing_cgroup_path_is_not_followed(tmp_path):
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("0::/../../../etc\n")
    outside = tmp_path / "etc"  # where sys/fs/cgroup/../../../etc would lead
    outside.mkdir()
    (outside / "cpuset.mems.effective").write_text("7\n")
    assert read_cgroup(root).mems is None


def test_memory_nodes_round_trip_and_are_checked(tmp_path):
    _two_node_host(tmp_path)
    _pod_v2(tmp_path, "4-7", "1")
    h = gather_host(env={"PATH": ""}, root=str(tmp_path))
    doc = json.loads(json.dumps(h.to_json()))
    assert doc["memory"]["allowed_nodes"] == [1]
    again = host_from_json(doc)
    assert again.memory_nodes == (1,) and again.memory_nodes_source == "cgroup cpuset.mems.effective"
    doc["memory"]["allowed_nodes"] = [5]
    with pytest.raises(ValueError, match="memory.allowed_nodes"):
        host_from_json(doc)


# ---------------------------------------------------------------------------------------------------------
# A real cgroup: limited to CPUs {0,1} (those of them this machine has) and memory node 0
# ---------------------------------------------------------------------------------------------------------

def _real_cgroup() -> tuple[Path, str] | None:
    """A fresh cgroup directory with cpuset, and the file to put a pid in; None (with the reason raised as a
    skip) where this process cannot create one."""
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    name = f"kt-test-{uuid.uuid4().hex[:8]}"
    for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        try:
            if "cpuset" in (mount / "cgroup.controllers").read_text().split() and \
                    "cpuset" in (mount / "cgroup.subtree_control").read_text().split():
                d = mount / name
                d.mkdir()
                return d, "cgroup.procs"
        except OSError:
            continue
    v1 = Path("/sys/fs/cgroup/cpuset")
    if (v1 / "cpuset.cpus").exists():
        try:
            d = v1 / name
            d.mkdir()
            return d, "tasks"
        except OSError as e:
            pytest.skip(f"cannot create a cpuset cgroup under {v1}: {e}")
    pytest.skip("no writable cgroup v2 with the cpuset controller, nor a v1 cpuset hierarchy")


@pytest.fixture
def limited_cgroup():
    d, procs = _real_cgroup()
    cpus = sorted(os.sched_getaffinity(0) & {0, 1})
    try:
        if procs == "tasks":  # v1: a child cpuset is empty until given CPUs and mems
            (d / "cpuset.cpus").write_text(",".join(map(str, cpus)))
            (d / "cpuset.mems").write_text("0")
        else:
            (d / "cpuset.cpus").write_text(",".join(map(str, cpus)))
            (d / "cpuset.mems").write_text("0")
        yield d / procs, cpus
    finally:
        try:
            d.rmdir()
        except OSError:
            pass


def _in_cgroup(procs: Path, argv: list[str]) -> subprocess.CompletedProcess:
    def enter():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    env = {**os.environ, "PATH": os.environ.get("PATH", "")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, preexec_fn=enter, env=env)


def test_doctor_and_dry_run_inside_a_real_cgroup(limited_cgroup):
    procs, cpus = limited_cgroup
    kt = [sys.executable, "-m", "kt_launch"]
    r = _in_cgroup(procs, kt + ["doctor", "--json"])
    doc = json.loads(r.stdout)
    assert doc["cpu"]["usable_cpus"] == cpus and "cgroup" in doc["cpu"]["usable_cpus_source"]
    assert doc["memory"]["allowed_nodes"] == [0] and "cgroup" in doc["memory"]["allowed_nodes_source"]
    r = _in_cgroup(procs, kt + ["doctor"])
    line = next(x for x in r.stdout.splitlines() if x.startswith("usable:"))
    assert f"{len(cpus)} CPUs" in line and "memory node(s) [0] from cgroup" in line
    r = _in_cgroup(procs, kt + ["--profile", str(SEED_PROFILE), "--dry-run", "--json", "--no-check"])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["resolved"]
    assert res["kt.numa_nodes"]["value"] == [0]
    assert "mems" in res["kt.numa_nodes"]["reason"] and "cgroup" in res["kt.numa_nodes"]["reason"]
    assert f"{len(cpus)} CPUs from cgroup" in res["kt.cpuinfer"]["reason"]
