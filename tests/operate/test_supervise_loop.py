"""The supervisor's event loop with a real kt-launch process and a real stand-in server: deadlines that a
trickling /health cannot stretch, signals seen at once, exit codes that are never 0 after a failure, no
zombies, output at pipe speed, and known crashes explained after the log tail."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from operate.support import pid_gone
from operate.test_supervise import start
from standin.support import read_events

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")


def test_a_trickling_health_cannot_hold_up_the_ready_timeout(tmp_path, launches):
    """/health sends its status line, then a byte every 0.2 s: each read would succeed, the request never
    ends. --ready-timeout 3 still stops the server after about 3 s (urllib's per-read timeout never fired)."""
    t0 = time.monotonic()
    launch, _ = start(tmp_path, launches, "trickle", extra=["--ready-timeout", "3", "--grace-period", "5"])
    rc = launch.finish(timeout=30)
    took = time.monotonic() - t0
    assert rc == 124, launch.err
    assert "not ready within 3s" in launch.err
    assert took < 3 + 10, f"kt-launch took {took:.1f}s for --ready-timeout 3"
    assert pid_gone(launch.child_pid())


def test_sigint_while_a_health_poll_trickles_is_seen_at_once(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "trickle", extra=["--grace-period", "10"], env={"FAKE_CLEANUP": "0.1"})
    launch.wait_file("loading")
    launch.wait_for(lambda: "waiting for" in launch.err, timeout=20, what="the first poll")
    cpu0 = cpu_seconds(launch.proc.pid)
    time.sleep(1.5)  # a poll is in flight now, its server trickling
    assert cpu_seconds(launch.proc.pid) - cpu0 < 0.5, "kt-launch spins while it waits"
    t0 = time.monotonic()
    launch.signal(signal.SIGINT)
    rc = launch.finish(timeout=30)
    took = time.monotonic() - t0
    assert rc == 130
    assert took < 2.0, f"SIGINT took {took:.1f}s to stop kt-launch"
    assert (tmp_path / "got_signal").read_text() == "SIGINT"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_server_that_exits_0_before_ready_is_a_failure(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "exit0")
    rc = launch.finish()
    assert rc == 1, launch.err
    assert "exited with code 0 before it was ready (exit code 1)" in launch.err
    assert "kt-launch: error:" in launch.err


def _zombies_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(d.name))
    return out


def test_orphans_that_come_back_to_kt_launch_are_reaped_while_it_serves(tmp_path, launches):
    """30 grandchildren of the server outlive their parents and die under kt-launch (the subreaper): each is
    reaped as it dies, not at shutdown."""
    launch, _ = start(tmp_path, launches, "orphans", env={"FAKE_READY_AFTER": "0.2", "FAKE_ORPHANS": "30"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    launch.wait_file("orphans")
    time.sleep(1.5)  # every orphan has slept its 0.2 s and died by now
    zombies = _zombies_of(launch.proc.pid)
    assert zombies == [], f"{len(zombies)} zombie children under kt-launch"
    assert launch.proc.poll() is None
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143


def test_twenty_megabytes_of_output_pass_at_pipe_speed(tmp_path, launches):
    """The server writes 20 MB of log lines (that also match phase patterns) once ready; its writes block when
    the pipe is full, so the time they take is kt-launch's throughput."""
    launch, _ = start(tmp_path, launches, "flood", env={"FAKE_READY_AFTER": "0.2", "FAKE_FLOOD_MB": "20"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    (tmp_path / "go").write_text("1")
    took = float(launch.wait_file("flood_s", timeout=60))
    assert took < 2.0, f"20 MB took {took:.2f}s through kt-launch"
    launch.wait_for(lambda: launch.out_path.stat().st_size >= 20_000_000, timeout=20, what="the output")
    launch.signal(signal.SIGINT)
    assert launch.finish() == 130
    out = launch.out_path.read_bytes()
    assert out.count(b"Decode batch.") >= 20_000_000 // 200


def test_phase_detection_stops_at_ready():
    """After ready the tracker no longer looks at lines: a later error line changes nothing."""
    import collections

    from kt_launch.run.loop import ERROR_PHASE, PhaseTracker, Tee

    tracker = PhaseTracker()
    sink: list[bytes] = []
    tee = Tee(set(), sink.append, collections.deque(maxlen=5), tracker)
    tee.feed(b"Load weight begin.\n")
    assert tracker.phase == "load weight"
    tracker.active = False
    tee.feed(b"Traceback (most recent call last):\nRuntimeError: later\n")
    assert tracker.phase == "load weight" and tracker.phase != ERROR_PHASE
    assert b"".join(sink).count(b"\n") == 3


# -- crashes explained: recorded lines through a real stand-in server -------------------------------------

OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
       "79.19 GiB of which 1.02 GiB is free.")
CRASHES = {
    "empty": ("[2026-01-01 00:00:01 TP0] Load weight begin. avail mem=77.00 GB\n"
              "Traceback (most recent call last):\n"
              '  File "sglang/srt/layers/moe/kt_ep_wrapper.py", line 212, in create_weights\n'
              "TypeError: empty() received an invalid combination of arguments - got (NoneType, int, int, "
              "dtype=torch.dtype), but expected one of:\n", "KT-E540"),
    "cpuinfer": ("[2026-01-01 00:00:01 TP0] Load weight begin.\n"
                 '  File "kt_kernel/experts.py", line 88, in __new__\n'
                 "TypeError: KTMoEWrapper() argument 'cpuinfer_threads' must be int, not None\n", "KT-E541"),
    "header": ("Traceback (most recent call last):\n"
               '  File "sglang/srt/lora/lora.py", line 150, in initialize_weights\n'
               "safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge\n", "KT-E542"),
    "device": ("[2026-01-01 00:00:03 TP0] Capture cuda graph begin. This can take up to several minutes.\n"
               "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, "
               "cuda:0 and cpu!\n", "KT-E543"),
    "oom-weights": ("[2026-01-01 00:00:01 TP0] Load weight begin. avail mem=77.00 GB\n" + OOM + "\n", "KT-E544"),
    "oom-kv": ("[2026-01-01 00:00:01 TP0] Load weight begin. avail mem=77.00 GB\n"
               "[2026-01-01 00:00:09 TP0] Load weight end. type=DeepseekV2ForCausalLM, avail mem=30.10 GB\n"
               + OOM + "\n", "KT-E545"),
    "oom-graph": ("[2026-01-01 00:00:09 TP0] Load weight end. avail mem=30.10 GB\n"
                  "[2026-01-01 00:00:10 TP0] KV Cache is allocated. #tokens: 120000, KV size: 8.00 GB\n"
                  "[2026-01-01 00:00:11 TP0] Capture cuda graph begin. This can take up to several minutes.\n"
                  + OOM + "\n", "KT-E546"),
    "sigill-line": ("Fatal Python error: Illegal instruction\n\nCurrent thread 0x00007f (most recent call first):\n"
                    '  File "kt_kernel/__init__.py", line 12 in <module>\n', "KT-E548"),
    "numa": ("[2026-01-01 00:00:02 TP0] KTMoEWrapper: creating CPUInfer with 2 pools\n"
             "set_mempolicy: Operation not permitted\n"
             "libnuma: Warning: numa_bind failed: Invalid argument\n", "KT-E549"),
    "port": ("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 30000): "
             "address already in use\n", "KT-E550"),
}


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_a_known_crash_is_explained_after_the_log_tail(tmp_path, launches, name):
    lines, code = CRASHES[name]
    (tmp_path / "lines.txt").write_text(lines)
    launch, _ = start(tmp_path, launches, "crash", env={"FAKE_LINES": str(tmp_path / "lines.txt")})
    rc = launch.finish()
    assert rc == 1, launch.err
    err = launch.err
    assert "lines of SGLang's output" in err
    assert code in err, err
    assert err.index("lines of SGLang's output") < err.index(code)
    others = {c for _, c in CRASHES.values()} - {code}
    assert not [c for c in others if c in err], err


def test_a_server_killed_by_sigill_is_explained(tmp_path, launches):
    (tmp_path / "lines.txt").write_text("[2026-01-01 00:00:00] Init torch distributed begin.\n")
    launch, _ = start(tmp_path, launches, "crash", env={"FAKE_LINES": str(tmp_path / "lines.txt"),
                                                       "FAKE_SIGNAL": str(int(signal.SIGILL))})
    assert launch.finish() == 128 + signal.SIGILL
    assert "was killed by SIGILL" in launch.err
    assert "KT-E548" in launch.err and "kt-launch doctor" in launch.err


def test_an_unknown_crash_adds_no_finding(tmp_path, launches):
    (tmp_path / "lines.txt").write_text("Traceback (most recent call last):\nValueError: something new\n")
    launch, _ = start(tmp_path, launches, "crash", env={"FAKE_LINES": str(tmp_path / "lines.txt")})
    assert launch.finish() == 1
    assert "what that means" not in launch.err


def test_oom_fix_names_the_planned_count(tmp_path, launches):
    from operate.support import plain_profile

    def prof(fake, port):
        return plain_profile(fake, port, kt={"num_gpu_experts": 8})

    (tmp_path / "lines.txt").write_text(CRASHES["oom-weights"][0])
    launch, _ = start(tmp_path, launches, "crash", profile=prof, env={"FAKE_LINES": str(tmp_path / "lines.txt")})
    assert launch.finish() == 1
    assert "kt.num_gpu_experts is 8 in this plan: try 4" in launch.err



# -- --restart on-failure ---------------------------------------------------------------------------------

def starts(tmp_path) -> list[int]:
    p = tmp_path / "starts"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def test_restart_on_failure_is_bounded_and_names_each_restart(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die", extra=["--restart", "on-failure", "--max-restarts", "2"])
    rc = launch.finish(timeout=60)
    assert rc == 7
    err = launch.err
    assert len(starts(tmp_path)) == 3, err
    assert "restarting SGLang in 1s (restart 1 of at most 2 within 10 min)" in err
    assert "restarting SGLang in 2s (restart 2 of at most 2 within 10 min)" in err
    assert "died 3 times within 10 min (--max-restarts 2): not restarting it again" in err
    assert err.count("| RuntimeError: boom in kt_kernel") >= 3  # each death shows its tail


def test_a_restarted_server_becomes_ready(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die_once", extra=["--restart", "on-failure", "--json"],
                      env={"FAKE_READY_AFTER": "0.3"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner after the restart")
    first, second = starts(tmp_path)
    assert first != second and pid_gone(first)
    assert "exited with code 5 before it was ready" in launch.err and "restarting SGLang in 1s" in launch.err
    launch.signal(signal.SIGINT)
    assert launch.finish() == 130
    ready, end = read_events(launch.out)  # --json: one `ready`, the restarted run's
    assert ready["event"] == "ready" and ready["restarted"] is True and ready["smoke"] is None  # --smoke off
    assert end == {**end, "event": "exit", "code": 130, "reason": "signal", "signal": "SIGINT"}


def test_sigint_during_the_restart_backoff_stops_at_once(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die", extra=["--restart", "on-failure"])
    launch.wait_for(lambda: "restarting SGLang in 1s" in launch.err, timeout=30, what="the first restart")
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=10) == 130
    assert "before the restart" in launch.err
    assert len(starts(tmp_path)) in (1, 2)  # the signal may land just after the restart


def test_no_restart_by_default_and_max_restarts_needs_restart(tmp_path, capsys, launches):
    launch, _ = start(tmp_path, launches, "die")
    assert launch.finish() == 7
    assert len(starts(tmp_path)) == 1 and "restarting" not in launch.err
    from kt_launch.cli import main
    from operate.support import plain_profile, write_host, write_profile

    prof = write_profile(tmp_path, plain_profile("/bin/false", 30000))
    assert main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)), "--supervise",
                 "--max-restarts", "2"]) == 2
    assert "--max-restarts needs --restart on-failure" in capsys.readouterr().err
    assert main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)),
                 "--restart", "on-failure"]) == 2
    assert "need --supervise" in capsys.readouterr().err
    assert main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)), "--supervise",
                 "--restart", "on-failure", "--max-restarts", "-1"]) == 2
    assert "--max-restarts" in capsys.readouterr().err


def test_a_command_too_large_for_the_kernel_blames_its_size_not_runtime_python():
    """A real E2BIG (one argument over the kernel's 128 KiB limit) names the command's size and what to shorten
    (issue 18: it blamed runtime.python); a missing interpreter still names runtime.python."""
    import subprocess
    import sys

    code = ("import sys; from kt_launch.render.argv import Command; from kt_launch.run.execute import exec_command\n"
            "sys.exit(exec_command(Command([sys.argv[1], '-c', 'pass', 'x' * 200000], {}), []))")
    r = subprocess.run([sys.executable, "-c", code, sys.executable], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "too large" in r.stderr and "server.extra_args" in r.stderr, r.stderr
    assert "runtime.python" not in r.stderr
    r = subprocess.run([sys.executable, "-c", code, "/nonexistent/python"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "runtime.python" in r.stderr, r.stderr


# -- restarts: one rule, each run its own findings, the port checked again (issue 23) -------------------------

def test_a_deterministic_crash_is_not_restarted(tmp_path, launches):
    """A CUDA OOM at weight load: the same argv dies the same way, so --restart on-failure does not run it again
    (the signature's `deterministic` field, not its code); the message says why, after the finding."""
    (tmp_path / "lines.txt").write_text(CRASHES["oom-weights"][0])
    launch, _ = start(tmp_path, launches, "crash", extra=["--restart", "on-failure", "--json"],
                      env={"FAKE_LINES": str(tmp_path / "lines.txt")})
    assert launch.finish(timeout=60) == 1
    err = launch.err
    assert len(starts(tmp_path)) == 1, err
    assert "restarting SGLang in" not in err
    assert "not restarting SGLang (--restart on-failure): KT-E544 says the configuration caused this crash" in err
    assert err.index("KT-E544") < err.index("not restarting SGLang")
    (end,) = read_events(launch.out)  # --json: the exit event carries the crash signature's finding by its code
    assert end == {**end, "event": "exit", "code": 1, "reason": "died_before_ready", "returncode": 1}
    assert [f["code"] for f in end["findings"]] == ["KT-E544"]


def test_a_crash_that_may_pass_is_restarted_and_each_run_has_its_own_findings(tmp_path, launches):
    """The first run dies with a port collision (KT-E550: another server may go away), the restart with an unknown
    error: the second report shows only its own tail, and no KT-E550."""
    (tmp_path / "lines.txt").write_text(CRASHES["port"][0])
    (tmp_path / "again.txt").write_text("Traceback (most recent call last):\nValueError: something else\n")
    launch, _ = start(tmp_path, launches, "crash", extra=["--restart", "on-failure", "--max-restarts", "1"],
                      env={"FAKE_LINES": str(tmp_path / "lines.txt"), "FAKE_LINES_AGAIN": str(tmp_path / "again.txt")})
    assert launch.finish(timeout=60) == 1
    err = launch.err
    assert len(starts(tmp_path)) == 2, err
    first, second = err.split("restarting SGLang in 1s", 1)
    assert "KT-E550" in first and "Errno 98" in first
    assert "KT-E550" not in second and "Errno 98" not in second, second
    assert "ValueError: something else" in second
    assert "SGLang died 2 times within 10 min (--max-restarts 1): not restarting it again" in second
    assert "it died" not in err


def test_a_restart_checks_the_port_again(tmp_path, launches):
    """Another server takes the port while SGLang is down: the restart is refused (exit 3, as before the first
    start), never 'ready after 0.0s' on the other server's /health."""
    import socket

    launch, port = start(tmp_path, launches, "die", extra=["--restart", "on-failure"])
    launch.wait_for(lambda: "restarting SGLang in 1s" in launch.err, timeout=30, what="the first restart")
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen(1)
        rc = launch.finish(timeout=30)
    assert rc == 3, launch.err
    assert f"127.0.0.1:{port} is already in use" in launch.err and "not restarting SGLang" in launch.err
    assert len(starts(tmp_path)) == 1
    assert "is ready" not in launch.err


def test_a_dead_childs_last_lines_are_read_in_the_turn_that_reaps_it(tmp_path):
    """The round-5 CI flake: a replica printed its CUDA OOM line and exited between the loop's select and its
    waitpid, so the death was judged on a log without that line and restarted. Made certain here: the
    terminal is stalled (writer backlog above the high mark), so the loop stops reading the pipes while the
    child writes its last line and dies; the turn that reaps it still hands over that line, every time."""
    import subprocess
    import sys

    from kt_launch.run.loop import Loop, Writer, _HIGH

    stall_r, stall_w = os.pipe()  # nobody reads it: the writer thread blocks, its backlog stays
    writer = Writer(os.fdopen(stall_w, "w"))
    writer.put(b"x" * (_HIGH + 1))
    loop = Loop()
    loop.watch_writers(writer)
    got: list[bytes] = []
    try:
        child = loop.spawn([sys.executable, "-c", "import sys; sys.stderr.write('torch.OutOfMemoryError: "
                            "CUDA out of memory\\n'); sys.exit(1)"], dict(os.environ), None, got.append, got.append)
        deadline = time.monotonic() + 20
        while child.returncode is None and time.monotonic() < deadline:
            loop.turn(time.monotonic() + 0.05)  # paused: only the reap can notice the death
        assert child.returncode == 1
        assert b"CUDA out of memory" in b"".join(got), got
    finally:
        loop.close()
        os.close(stall_r)  # the writer thread's write fails now (BrokenPipe), and it goes on idle
