"""A fleet under --supervise --smoke: every replica (the sglang-kt stand-in, tests/standin/sglang_kt.py) gets the
smoke requests, then the real sglang-router 0.3.2 gets one; the ready message carries each one's figures. A
replica that answers gibberish stops the fleet with exit 4 and leaves nothing running. Under --json (these
launches carry it: the text on stderr is the same) stdout holds the events: a `ready` per replica with its
smoke timings, the router's and the fleet's; `smoke_failed` per failed replica and `exit`."""

from __future__ import annotations

import signal
import sys

import pytest

from operate.support import Launch, pid_gone

from fleet.support import dual_socket, fleet_profile, write_json, write_profile
from fleet.test_supervise_router import descendants, kill_tree, listening, ports
from standin.support import make_standin, read_events


def start(tmp_path, router_venv, mode: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
    router_port, base = ports()
    exe = make_standin(tmp_path, sys.executable)
    p = write_profile(tmp_path, fleet_profile(exe, base, {"router": {"python": str(router_venv), "port": router_port,
                                                                     "metrics_port": router_port + 1,
                                                                     "policy": "round_robin"}}))
    h = write_json(tmp_path / "host.json", dual_socket())
    launch = Launch(tmp_path, ["--profile", str(p), "--host-facts", str(h), "--no-check", "--supervise",
                               "--grace-period", "10", "--ready-timeout", "90", "--smoke", "on", "--json", *extra],
                    {"STANDIN_MODE": mode, "STANDIN_PER_PORT": "1", "STANDIN_READY_AFTER": "0.2", **(env or {})})
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
        launch.wait_for(lambda: '"role": "fleet"' in launch.out, 10, "the fleet's ready event")
        ready = read_events(launch.out)
        assert [(e["event"], e["role"], e["name"]) for e in ready] == [
            ("ready", "replica", "numa0"), ("ready", "replica", "numa1"), ("ready", "router", "router"),
            ("ready", "fleet", None)]
        for e in ready[:2]:
            assert [r["ok"] for r in e["smoke"]["requests"]] == [True, True]
            assert all(r["ttft_s"] is not None and r["decode_tok_s"] > 0 for r in e["smoke"]["requests"])
        assert ready[2]["url"] == ready[3]["url"] == f"http://127.0.0.1:{router_port}"
        assert len(ready[2]["smoke"]["requests"]) == 1 and ready[2]["smoke"]["ok"]
        assert ready[3]["replicas"] == [{"name": e["name"], "url": e["url"]} for e in ready[:2]]
        assert "Uvicorn running" not in launch.out  # the replicas' own lines: stderr only
        served = [int((tmp_path / str(base + k) / "requests").read_text()) for k in (1, 2)]
        assert sorted(served)[0] >= 2 and sum(served) == 5  # 2 each, and the router's one went to a replica
        pids = descendants(launch.proc.pid)
        launch.signal(signal.SIGTERM)
        assert launch.finish(timeout=30) == 143
        assert all(pid_gone(pid) for pid in pids)
        end = read_events(launch.out)[-1]
        assert end["event"] == "exit" and end["code"] == 143 and end["reason"] == "signal"
    finally:
        kill_tree(launch)


def test_bench_of_a_fleet_profile_goes_through_its_router(tmp_path, router_venv):
    """`kt-launch bench --profile P` of a fleet profile: the requests go to the fleet's router (the real
    sglang-router, which hands them to the replicas), with the setup of this machine's first replica."""
    import json
    import subprocess

    launch, router_port, base = start(tmp_path, router_venv, "good")
    try:
        launch.wait_for(lambda: "the fleet is ready" in launch.err, 90, "the fleet to be ready")
        before = [int((tmp_path / str(base + k) / "requests").read_text()) for k in (1, 2)]
        done = subprocess.run([sys.executable, "-m", "kt_launch", "bench", "--profile", str(tmp_path / "profile.yaml"),
                               "--host-facts", str(tmp_path / "host.json"), "--lengths", "64,128",
                               "--output-tokens", "4", "--json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["ok"] and doc["url"] == f"http://127.0.0.1:{router_port}"
        assert [r["input_tokens"] for r in doc["rows"]] == [64, 128]
        assert doc["setup"]["method"] == "BF16" and doc["setup"]["model"] == "dsv2-lite"
        after = [int((tmp_path / str(base + k) / "requests").read_text()) for k in (1, 2)]
        assert sum(after) > sum(before)  # the replicas answered the bench, through the router
        done = subprocess.run([sys.executable, "-m", "kt_launch", "bench", "--profile", str(tmp_path / "profile.yaml"),
                               "--start"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "--start starts one server" in done.stderr
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
        events = read_events(launch.out)
        assert [e["event"] for e in events] == ["smoke_failed"] * (2 if mode == "gibberish" else 1) + ["exit"]
        assert events[0]["name"] == "numa0" and events[0]["role"] == "replica" and events[0]["stopping"]
        assert {f["code"] for e in events[:-1] for f in e["findings"]} == {code}
        assert any("Uvicorn running" in line for line in events[0]["log_tail"])
        assert events[-1] == {**events[-1], "code": 4, "reason": "smoke_failed"}
        if mode == "crash2":  # numa0 died on its own during the smoke test: named, with its exit status
            assert events[-1]["name"] == "numa0" and events[-1]["returncode"] not in (None, 0)
    finally:
        kill_tree(launch)


def _restart(tmp_path, router_venv, after: str):
    """The fleet ready (both replicas good), then numa0 killed: --restart on-failure starts it again, and the stand-in
    it starts then answers in mode `after` (STANDIN_MODE_RESTARTED)."""
    import os

    launch, router_port, base = start(tmp_path, router_venv, "good", ("--restart", "on-failure"),
                                      {"STANDIN_MODE_RESTARTED": after})
    launch.wait_for(lambda: "the fleet is ready" in launch.err, 90, "the fleet to be ready")
    first = int((tmp_path / str(base + 1) / "pid").read_text())
    os.kill(first, signal.SIGKILL)
    launch.wait_for(lambda: "numa0 is ready again" in launch.err, 60, "numa0's restart")
    return launch, router_port, base


def test_a_restarted_replica_is_smoke_tested_again(tmp_path, router_venv):
    launch, _, base = _restart(tmp_path, router_venv, "good")
    try:
        launch.wait_for(lambda: launch.out.count('"role": "replica"') >= 3, 30, "numa0's second ready event")
        again = [e for e in read_events(launch.out) if e["event"] == "ready" and e.get("restarted")]
        assert [e["name"] for e in again] == ["numa0"]
        assert again[0]["smoke"]["ok"] and [r["ok"] for r in again[0]["smoke"]["requests"]] == [True, True]
        assert launch.err.count("smoke test (--smoke on): numa0\n") == 1  # its own test, after the fleet's
        assert "kt-launch: smoke test: numa0: 2 request(s) passed; TTFT" in launch.err
        assert int((tmp_path / str(base + 1) / "requests").read_text()) >= 2  # the new process answered them
        launch.signal(signal.SIGTERM)
        assert launch.finish(timeout=30) == 143
    finally:
        kill_tree(launch)


def test_a_restarted_replica_that_fails_its_smoke_test_is_stopped_and_the_fleet_serves_on(tmp_path, router_venv):
    """Good at the start, gibberish after its restart: under --smoke on that replica is stopped and not restarted
    (the router would hand it users' requests); numa1 and the router keep serving."""
    import json as _json
    import urllib.request

    launch, router_port, base = _restart(tmp_path, router_venv, "gibberish")
    try:
        launch.wait_for(lambda: "was stopped after its failed smoke test" in launch.err, 60, "numa0 to be stopped")
        err = " ".join(launch.err.split())
        assert "ERROR KT-E562 smoke test of numa0" in err
        assert "the smoke test of numa0, restarted, failed (--smoke on): stopping it" in err
        assert "1 of 2 replicas still serving through the router (numa1)" in err
        assert launch.err.count("restarting it in") == 1  # the kill's restart only
        assert not listening(base + 1)
        failed = [e for e in read_events(launch.out) if e["event"] == "smoke_failed"]
        assert [(e["name"], e["stopping"]) for e in failed] == [("numa0", True)]
        body = _json.dumps({"model": "dsv2-lite", "messages": [{"role": "user", "content": "Hi"}],
                            "max_tokens": 8}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{router_port}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
        for _ in range(4):  # through the router, each answered by numa1 (the router retries past the dead one)
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200 and _json.load(r)["usage"]["completion_tokens"] > 0
        assert launch.proc.poll() is None
        launch.signal(signal.SIGTERM)
        assert launch.finish(timeout=30) == 143
    finally:
        kill_tree(launch)
