"""Fleet --supervise with stand-in replicas and a stand-in router (tests/fleet/fake_router.py as the
sglang_router package of a real interpreter): deadlines a trickling /health cannot stretch, exit codes that
are never 0 after a failure, plan-time refusals before any process starts, replicas on their NUMA node's
CPUs. Every wait is bounded; no router venv is needed."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from operate.support import Launch, pid_gone
from operate.test_supervise_loop import cpu_seconds

from fleet.support import HERE, dual_socket, fleet_profile, write_json, write_profile
from fleet.test_supervise_router import descendants, kill_tree, ports

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes and /proc")


def stand_in_router(tmp_path: Path) -> Path:
    """An interpreter whose `-m sglang_router.launch_router` is the stand-in (find_spec finds it too)."""
    pkg = tmp_path / "routerpkg" / "sglang_router"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "launch_router.py").write_text((HERE / "fake_router.py").read_text())
    py = tmp_path / "router-python"
    py.write_text(f'#!/bin/sh\nPYTHONPATH="{pkg.parent}" exec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    return py


@pytest.fixture
def fleet(tmp_path):
    started: list[Launch] = []

    def start(*extra: str, env: dict | None = None, host: dict | None = None, router_python: str | None = None,
              fleet_extra: dict | None = None, base: tuple[int, int] | None = None) -> tuple[Launch, int, int]:
        router_port, port = base or ports()
        fake = tmp_path / "fake-python"
        fake.write_text(f"#!{sys.executable}\n" + (HERE / "fake_replica.py").read_text())
        fake.chmod(0o755)
        rp = router_python or str(stand_in_router(tmp_path))
        section = {"router": {"python": rp, "port": router_port, "metrics_port": router_port + 1,
                              "policy": "round_robin"}, **(fleet_extra or {})}
        p = write_profile(tmp_path, fleet_profile(fake, port, section))
        h = write_json(tmp_path / "host.json", host or dual_socket())
        launch = Launch(tmp_path, ["--profile", str(p), "--host-facts", str(h), "--no-check", "--supervise", *extra],
                        env or {})
        started.append(launch)
        return launch, router_port, port

    yield start
    for launch in started:
        kill_tree(launch)


def replica_pid(tmp_path: Path, port: int) -> int | None:
    p = tmp_path / str(port) / "pid"
    return int(p.read_text()) if p.exists() else None


def test_a_trickling_health_cannot_hold_up_the_fleets_ready_timeout(fleet, tmp_path):
    t0 = time.monotonic()
    launch, _, base = fleet("--ready-timeout", "3", "--grace-period", "5", env={"FAKE_TRICKLE": "1"})
    rc = launch.finish(timeout=40)
    took = time.monotonic() - t0
    assert rc == 124, launch.err
    assert "not ready within 3s" in launch.err and "numa0" in launch.err and "numa1" in launch.err
    assert took < 3 + 10, f"{took:.1f}s for --ready-timeout 3"
    assert all(pid_gone(replica_pid(tmp_path, base + k)) for k in (1, 2))


def test_sigint_while_replica_polls_trickle_is_seen_at_once(fleet, tmp_path):
    launch, _, base = fleet("--grace-period", "10", env={"FAKE_TRICKLE": "1", "FAKE_CLEANUP": "0.1"})
    launch.wait_for(lambda: all(replica_pid(tmp_path, base + k) for k in (1, 2)), 30, "both replicas")
    cpu0 = cpu_seconds(launch.proc.pid)
    time.sleep(1.5)  # polls of both replicas are in flight, trickling
    assert cpu_seconds(launch.proc.pid) - cpu0 < 0.5, "kt-launch spins while it waits"
    pids = descendants(launch.proc.pid)
    t0 = time.monotonic()
    launch.signal(signal.SIGINT)
    rc = launch.finish(timeout=30)
    took = time.monotonic() - t0
    assert rc == 130
    assert took < 2.0, f"SIGINT took {took:.1f}s"
    assert all(pid_gone(p) for p in pids)
    assert (tmp_path / str(base + 1) / "got_signal").read_text() == "SIGINT"
    assert "did not exit in time" not in launch.err  # the replicas got their grace period


def test_a_replica_that_exits_0_before_ready_fails_the_fleet(fleet, tmp_path):
    launch, _, _ = fleet("--ready-timeout", "60", env={"FAKE_READY_AFTER": "30", "FAKE_EXIT_AFTER": "0.3"})
    rc = launch.finish(timeout=40)
    assert rc == 1, launch.err
    assert "exited with code 0 before the fleet was ready" in launch.err
    assert "exit code 1" in launch.err


def test_every_replica_dying_with_0_after_ready_is_exit_1(fleet, tmp_path):
    launch, _, _ = fleet("--ready-timeout", "60", env={"FAKE_READY_AFTER": "0.2", "FAKE_EXIT_AFTER": "3"})
    rc = launch.finish(timeout=40)
    assert "the fleet is ready" in launch.err, launch.err
    assert rc == 1, launch.err
    assert "no replica is left" in launch.err and "every replica died" in launch.err


def test_a_router_that_exits_0_fails_the_fleet(fleet, tmp_path):
    launch, _, _ = fleet("--ready-timeout", "60", env={"FAKE_READY_AFTER": "0.2", "FAKE_ROUTER_EXIT0": "1"})
    rc = launch.finish(timeout=40)
    assert rc == 1, launch.err
    assert "the router exited with code 0; stopping the fleet" in launch.err


def test_a_missing_router_interpreter_fails_before_any_replica_starts(fleet, tmp_path):
    """KT-W710 is known at plan time: nothing is started and waited for before the router would fail."""
    no_router = Path(sys.executable)  # the test interpreter has no sglang_router
    launch, _, base = fleet(router_python=str(no_router))
    rc = launch.finish(timeout=40)
    assert rc == 3, launch.err
    assert "KT-W710" in launch.err and "nothing was started" in launch.err
    assert replica_pid(tmp_path, base + 1) is None and replica_pid(tmp_path, base + 2) is None
    assert "starting numa0" not in launch.err


def test_a_taken_replica_port_fails_before_any_start_also_with_host_facts(fleet, tmp_path):
    router_port, base = ports()
    with socket.socket() as other:
        other.bind(("127.0.0.1", base + 2))
        other.listen()
        launch, _, _ = fleet(base=(router_port, base))
        rc = launch.finish(timeout=40)
    assert rc == 3, launch.err
    # the plan of a fleet started here checks this machine's ports even with --host-facts (KT-E708)
    assert f"port {base + 2} on 127.0.0.1 is already in use" in launch.err and "KT-E708" in launch.err
    assert "nothing was launched" in launch.err
    assert replica_pid(tmp_path, base + 1) is None


# -- NUMA placement --------------------------------------------------------------------------------------

def cpus_allowed(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            out: set[int] = set()
            for part in line.split(":", 1)[1].strip().split(","):
                lo, _, hi = part.partition("-")
                out |= set(range(int(lo), int(hi or lo) + 1))
            return out
    raise AssertionError("no Cpus_allowed_list")


def host_with(nodes: list[list[int]], gpu_nodes: list[int]) -> dict:
    """Host facts whose NUMA nodes hold the given CPUs of this machine (whatever it has)."""
    cpus = sorted({c for n in nodes for c in n})
    doc = dual_socket(gpu_nodes=tuple(gpu_nodes))
    doc["cpu"].update(physical_cores=len(cpus), logical_cpus=len(cpus), usable_cpus=cpus)
    doc["numa"] = [{"id": i, "cpus": n, "memory_bytes": 64 << 30} for i, n in enumerate(nodes)]
    return doc


def test_each_replica_runs_on_its_nodes_cpus(fleet, tmp_path):
    mine = sorted(os.sched_getaffinity(0))
    a, b = mine[0], mine[-1]
    launch, _, base = fleet("--ready-timeout", "60", "--grace-period", "5", env={"FAKE_READY_AFTER": "0.2"},
                            host=host_with([[a], [b]], [0, 1]))
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 60, "the fleet to be ready")
    assert cpus_allowed(replica_pid(tmp_path, base + 1)) == {a}
    assert cpus_allowed(replica_pid(tmp_path, base + 2)) == {b}
    assert f"numa0 runs on CPUs {a}" in launch.err and f"numa1 runs on CPUs {b}" in launch.err
    from shutil import which

    if which("numactl") is None:
        assert "numactl is not installed" in launch.err
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=30) == 130


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_replicas_sharing_a_node_get_disjoint_cpus(fleet, tmp_path):
    mine = sorted(os.sched_getaffinity(0))[:2]
    launch, _, base = fleet("--ready-timeout", "60", "--grace-period", "5", env={"FAKE_READY_AFTER": "0.2"},
                            host=host_with([mine], [0, 0]), fleet_extra={"replicas": 2})
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 60, "the fleet to be ready")
    one, two = cpus_allowed(replica_pid(tmp_path, base + 1)), cpus_allowed(replica_pid(tmp_path, base + 2))
    assert one and two and not one & two, (one, two)
    assert one | two == set(mine)
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=30) == 130


def test_split_follows_smt_runs():
    from kt_launch.resolve.fleet import split_cpus

    node = list(range(0, 4)) + list(range(8, 12))  # cores 0-3 and their siblings 8-11
    assert split_cpus(node, 0, 2, 4) == [0, 1, 8, 9] and split_cpus(node, 1, 2, 4) == [2, 3, 10, 11]
    assert split_cpus([0, 1, 2], 0, 2) == [0, 1] and split_cpus([0, 1, 2], 1, 2) == [2]


# -- --restart on-failure --------------------------------------------------------------------------------

def test_a_killed_replica_is_restarted_while_the_others_keep_serving(fleet, tmp_path):
    """fleet.restart: on-failure in the profile (--restart on the command line would do the same)."""
    launch, router_port, base = fleet("--ready-timeout", "60", "--grace-period", "5",
                                      env={"FAKE_READY_AFTER": "0.2"}, fleet_extra={"restart": "on-failure"})
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 60, "the fleet to be ready")
    first = replica_pid(tmp_path, base + 1)
    other = replica_pid(tmp_path, base + 2)
    os.kill(first, signal.SIGKILL)
    launch.wait_for(lambda: "numa0 is ready again" in launch.err, 30, "the restarted replica")
    err = launch.err
    assert "replica numa0 (http://127.0.0.1:%d) was killed by SIGKILL; restarting it in 1s (restart 1 of at most 3 " \
           "within 10 min); the router keeps serving from the others" % (base + 1) in err
    again = replica_pid(tmp_path, base + 1)
    assert again != first and pid_gone(first)
    assert replica_pid(tmp_path, base + 2) == other  # the other replica was never touched
    assert launch.proc.poll() is None
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=30) == 130
    assert pid_gone(again)


def test_restart_no_on_the_command_line_beats_fleet_restart(fleet, tmp_path):
    launch, _, base = fleet("--ready-timeout", "60", "--grace-period", "5", "--restart", "no",
                            env={"FAKE_READY_AFTER": "0.2"}, fleet_extra={"restart": "on-failure"})
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 60, "the fleet to be ready")
    os.kill(replica_pid(tmp_path, base + 1), signal.SIGKILL)
    launch.wait_for(lambda: "1 of 2 replicas still serving" in launch.err, 30, "the dead replica to be reported")
    assert "restarting" not in launch.err
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=30) == 130


def test_a_replica_that_exits_0_while_serving_is_not_restarted(fleet, tmp_path):
    """One rule with a single instance (supervise.is_failure): a clean exit after ready is no failure, so
    --restart on-failure does not restart it."""
    launch, _, base = fleet("--ready-timeout", "60", "--restart", "on-failure",
                            env={"FAKE_READY_AFTER": "0.2", "FAKE_EXIT_AFTER": "3"})
    rc = launch.finish(timeout=40)
    err = launch.err
    assert "the fleet is ready" in err, err
    assert "restarting it in" not in err and "ready again" not in err, err
    assert "replica numa0 (http://127.0.0.1:%d) exited with code 0" % (base + 1) in err
    assert rc == 1 and "every replica died" in err


def test_a_replica_restart_checks_its_port_again(fleet, tmp_path):
    """Another server takes a dead replica's port during the backoff: it is not restarted (its /health would be
    the other server's); the other replica keeps serving."""
    launch, _, base = fleet("--ready-timeout", "60", "--grace-period", "5", "--restart", "on-failure",
                            env={"FAKE_READY_AFTER": "0.2"})
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 60, "the fleet to be ready")
    first = replica_pid(tmp_path, base + 1)
    t0 = time.monotonic()
    os.kill(first, signal.SIGKILL)
    with socket.socket() as other:  # taken at once: kt-launch waits 1 s before the restart
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        while True:
            try:
                other.bind(("127.0.0.1", base + 1))
                break
            except OSError:
                if time.monotonic() - t0 > 0.9:
                    import subprocess
                    ss = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
                    raise AssertionError(f"port {base + 1} still taken {time.monotonic() - t0:.2f}s after the "
                                         f"kill:\n{ss}\n{launch.err[-3000:]}")
                time.sleep(0.01)
        other.listen(1)
        assert pid_gone(first)
        launch.wait_for(lambda: "not restarting it" in launch.err, 30, "the refused restart")
        assert f"numa0: 127.0.0.1:{base + 1} is already in use" in launch.err
        assert "numa0 is ready again" not in launch.err
        assert launch.proc.poll() is None  # numa1 keeps serving
        launch.signal(signal.SIGINT)
        assert launch.finish(timeout=30) == 130


def test_a_replica_crash_the_configuration_caused_is_not_restarted(fleet, tmp_path):
    """A CUDA OOM at weight load: the same argv would die the same way, so --restart on-failure does not restart
    the replica (the signature's `deterministic` field), as for one instance."""
    lines = tmp_path / "oom.txt"
    lines.write_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n")
    launch, _, _ = fleet("--ready-timeout", "60", "--restart", "on-failure",
                         env={"FAKE_READY_AFTER": "30", "FAKE_CRASH_LINES": str(lines)})
    rc = launch.finish(timeout=40)
    err = launch.err
    assert rc == 1, err
    assert "not restarting replica numa" in err and "KT-E544 says the configuration caused this crash" in err, err
    assert "restarting it in" not in err
