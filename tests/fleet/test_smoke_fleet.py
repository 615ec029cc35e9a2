"""A fleet under --supervise --smoke: every replica (the sglang-kt stand-in, tests/standin/sglang_kt.py) gets the
smoke requests, then the real sglang-router 0.3.2 gets one; the ready message carries each one's figures. A
replica that answers gibberish stops the fleet with exit 4 and leaves nothing running."""

from __future__ import annotations

import signal
import sys

import pytest

from operate.support import Launch, pid_gone

from fleet.support import dual_socket, fleet_profile, write_json, write_profile
from fleet.test_supervise_router import descendants, kill_tree, listening, ports
from standin.support import make_standin


def start(tmp_path, router_venv, mode: str):
    router_port, base = ports()
    exe = make_standin(tmp_path, sys.executable)
    p = write_profile(tmp_path, fleet_profile(exe, base, {"router": {"python": str(router_venv), "port": router_port,
                                                                     "policy": "round_robin"}}))
    h = write_json(tmp_path / "host.json", dual_socket())
    launch = Launch(tmp_path, ["--profile", str(p), "--host-facts", str(h), "--no-check", "--supervise",
                               "--grace-period", "10", "--ready-timeout", "90", "--smoke", "on"],
                    {"STANDIN_MODE": mode, "STANDIN_PER_PORT": "1", "STANDIN_READY_AFTER": "0.2"})
    return launch, router_port, base


def test_every_replica_then_the_router_is_smoke_tested(tmp_path, router_venv):
    launch, router_port, base = start(tmp_path, router_venv, "good")
    try:
        launch.wait_for(lambda: "the fleet is ready" in launch.err, 90, "the fleet to be ready")
        err = launch.err
        assert "smoke test (--smoke on): numa0, numa1" in err and "smoke test (--smoke on): the router" in err
        for name in ("numa0", "numa1"):
            assert f"smoke test: {name}: 2 request(s) passed; TTFT" in err
        assert "smoke test: the router: 1 request(s) passed" in err
        served = [int((tmp_path / str(base + k) / "requests").read_text()) for k in (1, 2)]
        assert sorted(served)[0] >= 2 and sum(served) == 5  # 2 each, and the router's one went to a replica
        pids = descendants(launch.proc.pid)
        launch.signal(signal.SIGTERM)
        assert launch.finish(timeout=30) == 143
        assert all(pid_gone(pid) for pid in pids)
    finally:
        kill_tree(launch)


@pytest.mark.parametrize("mode,code", [("gibberish", "KT-E562"), ("crash2", "KT-E560")])
def test_a_bad_replica_stops_the_fleet_with_exit_4(tmp_path, router_venv, mode, code):
    launch, router_port, base = start(tmp_path, router_venv, mode)
    try:
        assert launch.finish(timeout=60) == 4, launch.err
        err = " ".join(launch.err.split())
        assert f"ERROR {code} smoke test of numa0" in err
        if mode == "gibberish":  # every replica is judged; crash2 stops the fleet at numa0's second request
            assert f"ERROR {code} smoke test of numa1" in err
        else:
            assert "request 2 (the same chat again) failed" in err
        assert "the last" in err and "lines of numa0" in err  # its log tail
        assert "the smoke test failed (--smoke on): stopping the fleet; exit code 4" in err
        assert "the fleet is ready" not in err and "starting router" not in err
        assert not any(listening(p) for p in (router_port, base + 1, base + 2))
    finally:
        kill_tree(launch)
