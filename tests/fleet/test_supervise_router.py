"""`kt-launch --supervise` with a fleet: stand-in replicas on loopback behind the REAL sglang-router 0.3.2.

Requests through the router reach every replica; a killed replica is named while the rest keep serving;
--fail-fast stops everything; SIGINT leaves no process and no listening port. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from operate.support import Launch, pid_gone

from ports import free_ports
from fleet.support import HERE, dual_socket, fleet_profile, write_json, write_profile

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ports() -> tuple[int, int]:
    """A router port and a server.port whose next two ports are free too (the replicas take them); the port after
    the router's is free for its metrics (fleet.router.metrics_port: router port + 1)."""
    base = free_ports(5)
    return base + 3, base


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (read from /proc), to check afterwards that none is left."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def chat(url: str) -> str:
    body = json.dumps({"model": "dsv2-lite", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with OPENER.open(req, timeout=20) as resp:
        assert resp.status == 200
        return json.loads(resp.read())["choices"][0]["message"]["content"]


@pytest.fixture
def fleet(tmp_path, router_venv):
    started: list[tuple[Launch, set[int]]] = []

    def start(*extra: str) -> tuple[Launch, int, int]:
        router_port, base = ports()
        fake = tmp_path / "fake-python"
        fake.write_text(f"#!{sys.executable}\n" + (HERE / "fake_replica.py").read_text())
        fake.chmod(0o755)
        p = write_profile(tmp_path, fleet_profile(fake, base, {"router": {"python": str(router_venv),
                                                                          "port": router_port,
                                                                          "metrics_port": router_port + 1,
                                                                          "policy": "round_robin"}}))
        h = write_json(tmp_path / "host.json", dual_socket())
        launch = Launch(tmp_path, ["--profile", str(p), "--host-facts", str(h), "--no-check", "--supervise",
                                   "--grace-period", "10", "--ready-timeout", "90", *extra], {})
        started.append((launch, set()))
        return launch, router_port, base

    yield start
    for launch, _ in started:  # clean-up if a test failed half-way: every process that kt-launch started
        kill_tree(launch)


def kill_tree(launch) -> None:
    """SIGKILL a kt-launch under test and every process group it started, then reap it."""
    for pid in [launch.proc.pid, *descendants(launch.proc.pid)]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        launch.proc.wait(timeout=5)
    except Exception:  # noqa: BLE001
        pass


def test_router_reaches_every_replica_survives_a_death_and_sigint_leaves_nothing(fleet, tmp_path):
    launch, router_port, base = fleet()
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 90, "the fleet to be ready")
    url = f"http://127.0.0.1:{router_port}"
    assert f"OpenAI base URL: {url}/v1" in launch.err and f"curl {url}/v1/chat/completions" in launch.err
    replies = {chat(url) for _ in range(6)}
    assert replies == {f"hello from replica on port {base + 1}", f"hello from replica on port {base + 2}"}
    assert all(int((tmp_path / str(base + k) / "hits").read_text()) >= 1 for k in (1, 2))
    pids = descendants(launch.proc.pid)
    assert len(pids) >= 3  # two replicas and the router

    os.kill(int((tmp_path / str(base + 1) / "pid").read_text()), signal.SIGKILL)
    launch.wait_for(lambda: "replica numa0" in launch.err and "still serving" in launch.err, 20,
                    "the dead replica to be reported")
    assert "1 of 2 replicas still serving" in launch.err
    assert {chat(url) for _ in range(4)} == {f"hello from replica on port {base + 2}"}
    assert launch.proc.poll() is None

    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=30) == 130
    assert all(pid_gone(pid) for pid in pids), [p for p in pids if not pid_gone(p, 0)]
    assert not any(listening(p) for p in (router_port, base + 1, base + 2))
    assert (tmp_path / str(base + 2) / "got_signal").read_text() == "SIGINT"
    assert (tmp_path / str(base + 2) / "cleaned").exists()  # the replica had time to clean up
    err = launch.err
    assert err.index("stopping the router, then the replicas") < err.index("fleet stopped by SIGINT")


def test_fail_fast_stops_everything_when_a_replica_dies(fleet, tmp_path):
    launch, router_port, base = fleet("--fail-fast")
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 90, "the fleet to be ready")
    pids = descendants(launch.proc.pid)
    os.kill(int((tmp_path / str(base + 2) / "pid").read_text()), signal.SIGKILL)
    assert launch.finish(timeout=30) == 128 + signal.SIGKILL
    assert "replica numa1" in launch.err and "--fail-fast" in launch.err
    assert all(pid_gone(pid) for pid in pids)
    assert not any(listening(p) for p in (router_port, base + 1, base + 2))
    assert (tmp_path / str(base + 1) / "got_signal").read_text() == "SIGTERM"


def test_a_restarted_replica_rejoins_the_router(fleet, tmp_path):
    """--restart on-failure: a replica killed while serving starts again, and requests through the real
    router reach it again (its URL is the same, the router's worker list never changed)."""
    launch, router_port, base = fleet("--restart", "on-failure")
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 90, "the fleet to be ready")
    url = f"http://127.0.0.1:{router_port}"
    first = int((tmp_path / str(base + 1) / "pid").read_text())
    os.kill(first, signal.SIGKILL)
    launch.wait_for(lambda: "numa0 is ready again" in launch.err, 60, "the restarted replica")
    assert int((tmp_path / str(base + 1) / "pid").read_text()) != first
    want = {f"hello from replica on port {base + 1}", f"hello from replica on port {base + 2}"}
    seen: set[str] = set()
    end = time.monotonic() + 150  # at the latest after the router's next health checks (60 s apart)
    while seen != want and time.monotonic() < end:
        seen.add(chat(url))
    assert seen == want
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=30) == 130
