"""--supervise with real processes: kt-launch runs as a process, its runtime.python is a fake SGLang that
serves HTTP on 127.0.0.1, and the tests signal kt-launch as a terminal or systemd would."""

import json
import signal

import pytest

from operate.support import Launch, free_port, lora_profile, make_fake, pid_gone, plain_profile, write_host, \
    write_profile

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")


def start(tmp_path, launches, mode, *, profile=None, extra=(), env=None, port=None):
    port = port or free_port()
    fake = make_fake(tmp_path)
    prof = write_profile(tmp_path, profile(fake, port) if profile else plain_profile(fake, port))
    host = write_host(tmp_path)
    args = ["--profile", str(prof), "--host-facts", str(host), "--no-check", "--supervise", *extra]
    launch = Launch(tmp_path, args, {"FAKE_MODE": mode, **(env or {})})
    launches.append(launch)
    return launch, port


def test_ctrl_c_during_load_gives_the_server_its_grace_period(tmp_path, launches):
    """SIGINT to kt-launch while weights load: forwarded to the server's group, which gets to finish its
    0.8 s clean-up (kt run SIGKILLs after 0.25 s); kt-launch exits 130 without a traceback."""
    launch, _ = start(tmp_path, launches, "load", extra=["--grace-period", "10"], env={"FAKE_CLEANUP": "0.8"})
    launch.wait_file("loading")
    child = launch.child_pid()
    launch.signal(signal.SIGINT)
    rc = launch.finish(timeout=30)
    assert rc == 130
    assert (tmp_path / "got_signal").read_text() == "SIGINT"
    assert (tmp_path / "cleaned").exists(), "the server was killed before its clean-up finished"
    assert pid_gone(child)
    assert "Traceback" not in launch.err
    assert "SIGKILL" not in launch.err.replace("SIGKILL in", "")
    assert "stopped by SIGINT" in launch.err


def test_sigterm_is_forwarded_and_a_server_that_ignores_it_is_killed_after_the_grace_period(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "load", extra=["--grace-period", "1"], env={"FAKE_IGNORE": "1"})
    launch.wait_file("loading")
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    rc = launch.finish(timeout=30)
    assert rc == 143
    assert (tmp_path / "got_signal").read_text() == "SIGTERM"
    assert not (tmp_path / "cleaned").exists()
    assert pid_gone(child)
    assert "did not exit within 1s: sending SIGKILL" in launch.err
    assert "Traceback" not in launch.err


def test_sighup_is_forwarded_and_exit_is_129(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "load", extra=["--grace-period", "10"], env={"FAKE_CLEANUP": "0.1"})
    launch.wait_file("loading")
    child = launch.child_pid()
    launch.signal(signal.SIGHUP)
    assert launch.finish() == 129
    assert pid_gone(child)


def test_readiness_detected_late_then_url_and_curl_printed(tmp_path, launches):
    """/health answers 503 for 1.5 s, then 200: kt-launch reports the phases it saw in the log, then the
    OpenAI base URL and a curl; the server's own output is passed through."""
    launch, port = start(tmp_path, launches, "serve", env={"FAKE_READY_AFTER": "1.5"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    err = launch.err
    assert f"OpenAI base URL: http://127.0.0.1:{port}/v1" in err
    assert f"curl http://127.0.0.1:{port}/v1/chat/completions" in err
    assert '"model": "dsv2-lite"' in err
    assert "phase: load weight" in err  # the status line, from the child's log
    assert "Uvicorn running" in err  # the child's stderr, teed
    assert "server_args=ServerArgs(" in launch.out  # the child's stdout, teed to stdout
    assert err.index("phase: load weight") < err.index("is ready")
    child = launch.child_pid()
    launch.signal(signal.SIGINT)
    assert launch.finish() == 130
    assert pid_gone(child)


def test_lora_mode_on_wildcard_host_polls_loopback_and_names_the_adapter(tmp_path, launches):
    launch, port = start(tmp_path, launches, "serve", profile=lora_profile, env={"FAKE_READY_AFTER": "0.3"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    err = launch.err
    assert f"http://127.0.0.1:{port}/v1" in err  # server.host 0.0.0.0 -> polled and shown as loopback
    assert '"lora_path": "west-adapter"' in err
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143


def test_child_that_dies_early_shows_its_log_tail_and_exit_code(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die")
    rc = launch.finish()
    assert rc == 7
    err = launch.err
    assert "exited with code 7 before it was ready (exit code 7)" in err
    tail = err[err.index("lines of SGLang's output"):]
    assert "| RuntimeError: boom in kt_kernel" in tail
    assert "| [2026-01-01 00:00:01] Load weight begin." in tail
    assert "last phase: error in the log" in err


def test_child_killed_by_a_signal_gives_128_plus_signal(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die_signal")
    assert launch.finish() == 128 + signal.SIGUSR1
    assert "was killed by SIGUSR1" in launch.err


def test_no_orphans_a_grandchild_left_behind_is_stopped(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "orphan", extra=["--grace-period", "2"])
    grandchild = int(launch.wait_file("grandchild"))
    assert launch.finish() == 3
    assert pid_gone(grandchild), "the server's grandchild outlived kt-launch"
    assert "left processes in its group" in launch.err


def test_ready_timeout_stops_the_server_and_exits_124(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "load", extra=["--ready-timeout", "1", "--grace-period", "5"],
                      env={"FAKE_CLEANUP": "0.1"})
    rc = launch.finish()
    assert rc == 124
    assert "not ready within 1s" in launch.err
    assert (tmp_path / "got_signal").read_text() == "SIGTERM"
    assert pid_gone(launch.child_pid())


def test_missing_interpreter_is_exit_2_naming_runtime_python(tmp_path, launches):
    port = free_port()
    prof = write_profile(tmp_path, plain_profile(tmp_path / "no-such-python", port))
    launch = Launch(tmp_path, ["--profile", str(prof), "--host-facts", str(write_host(tmp_path)), "--no-check",
                               "--supervise"], {})
    launches.append(launch)
    assert launch.finish() == 2
    assert "runtime.python" in launch.err
    assert "Traceback" not in launch.err


def test_supervise_and_exec_warn_that_host_facts_are_not_this_machine(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die")
    launch.finish()
    assert "the plan was made for the recorded host" in launch.err
    # exec: the fake replaces kt-launch, so its recorded pid is kt-launch's own
    port = free_port()
    sub = tmp_path / "exec"
    sub.mkdir()
    prof = write_profile(sub, plain_profile(make_fake(sub), port))
    ex = Launch(sub, ["--profile", str(prof), "--host-facts", str(write_host(sub)), "--no-check"], {"FAKE_MODE": "die"})
    launches.append(ex)
    assert ex.finish() == 7
    assert int((sub / "pid").read_text()) == ex.proc.pid
    assert "the plan was made for the recorded host" in ex.err


@pytest.mark.parametrize("bad", ["-1", "abc", "nan"])
def test_bad_grace_period_is_exit_2(tmp_path, bad, capsys):
    from kt_launch.cli import main

    prof = write_profile(tmp_path, plain_profile("/bin/false", 30000))
    rc = main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)), "--supervise",
               "--grace-period", bad])
    assert rc == 2
    assert "--grace-period" in capsys.readouterr().err


def test_ctrl_c_through_a_real_terminal(tmp_path):
    """kt-launch on a pseudo-terminal: ^C reaches only kt-launch (the server has its own session), which
    forwards it; the live status line is drawn in place while the weights load."""
    import os
    import pty
    import select
    import sys
    import time

    port = free_port()
    prof = write_profile(tmp_path, plain_profile(make_fake(tmp_path), port))
    host = write_host(tmp_path)
    env = {**os.environ, "FAKE_DIR": str(tmp_path), "FAKE_MODE": "load", "FAKE_CLEANUP": "0.5"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(sys.executable, [sys.executable, "-m", "kt_launch", "--profile", str(prof), "--host-facts",
                                   str(host), "--no-check", "--supervise", "--grace-period", "10"], env)
    buf, sent, end = b"", False, time.monotonic() + 30
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
            if not sent and b"phase: load weight" in buf:
                os.write(fd, b"\x03")
                sent = True
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < end + 10:
            time.sleep(0.05)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            done, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    child = int((tmp_path / "pid").read_text())
    assert sent, buf.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 130, buf.decode(errors="replace")
    assert (tmp_path / "cleaned").exists()
    assert pid_gone(child)
    assert b"\r\x1b[Kkt-launch: waiting for" in buf
    assert b"Traceback" not in buf


def test_server_does_not_outlive_a_killed_kt_launch(tmp_path, launches):
    """Even SIGKILL to kt-launch (no chance to forward anything) leaves no orphaned server: the child asked
    the kernel for SIGTERM when its parent dies."""
    launch, _ = start(tmp_path, launches, "load", env={"FAKE_CLEANUP": "0.1"})
    launch.wait_file("loading")
    child = launch.child_pid()
    launch.signal(signal.SIGKILL)
    assert launch.finish() == -signal.SIGKILL
    assert pid_gone(child, timeout=10)
    assert (tmp_path / "got_signal").read_text() == "SIGTERM"


def test_grace_period_without_supervise_is_exit_2(tmp_path, capsys):
    from kt_launch.cli import main

    prof = write_profile(tmp_path, plain_profile("/bin/false", 30000))
    assert main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)),
                 "--grace-period", "5"]) == 2
    assert "need --supervise" in capsys.readouterr().err
