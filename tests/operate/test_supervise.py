"""--supervise with real processes: kt-launch runs as a process, its runtime.python is a fake SGLang that
serves HTTP on 127.0.0.1, and the tests signal kt-launch as a terminal or systemd would."""

import json
import os
import signal
import socket
import time

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
    """Even SIGKILL to kt-launch (no chance to forward anything) leaves no orphaned server, not even one that
    ignores SIGTERM: the child asked the kernel for SIGKILL when its parent dies, so the port is free again."""
    launch, port = start(tmp_path, launches, "serve", env={"FAKE_IGNORE": "1", "FAKE_READY_AFTER": "0.2"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    child = launch.child_pid()
    launch.signal(signal.SIGKILL)
    assert launch.finish() == -signal.SIGKILL
    assert pid_gone(child, timeout=5)
    assert not (tmp_path / "cleaned").exists()
    assert port_free(port, timeout=5), f"port {port} still taken after kt-launch was killed"


def test_a_grandchild_that_left_the_group_with_setsid_is_stopped_too(tmp_path, launches):
    """kt-launch is a child subreaper: a daemon the server started in its own session comes back to it when
    the server exits, and is stopped before kt-launch exits."""
    launch, _ = start(tmp_path, launches, "daemon", extra=["--grace-period", "2"])
    grandchild = int(launch.wait_file("grandchild"))
    assert os.getpgid(grandchild) != launch.child_pid()
    assert launch.finish() == 3
    assert pid_gone(grandchild), "the setsid() grandchild outlived kt-launch"
    assert "outside its group" in launch.err


def test_a_server_already_on_the_port_is_refused_before_the_start_also_under_no_check(tmp_path, launches):
    """Otherwise its /health would answer and kt-launch would call a server ready that it did not start."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        launch, _ = start(tmp_path, launches, "serve", port=port)
        assert launch.finish() == 3
    assert f"127.0.0.1:{port} is already in use" in launch.err
    assert "nothing was started" in launch.err and "is ready" not in launch.err
    assert not (tmp_path / "pid").exists(), "the server was started"
    assert "Traceback" not in launch.err


def test_second_ctrl_c_says_what_it_does(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "load", extra=["--grace-period", "30"], env={"FAKE_IGNORE": "1"})
    launch.wait_file("loading")
    child = launch.child_pid()
    launch.signal(signal.SIGINT)
    launch.wait_for(lambda: "stopping SGLang" in launch.err, timeout=10, what="the stop message")
    launch.signal(signal.SIGINT)
    assert launch.finish(timeout=20) == 130
    assert pid_gone(child)
    assert "Ctrl+C again: sending SIGKILL now" in launch.err
    assert "did not exit within" not in launch.err


def test_a_secret_across_the_cut_of_a_very_long_line_stays_masked():
    """Output without a newline is passed on in pieces of about 64 KiB; wherever a piece ends, a secret that
    straddles the cut is masked whole (a real pipe, the real pump)."""
    import io
    import threading

    from kt_launch.run.supervise import _Console, _pump

    key = "sk-" + "".join(chr(ord("a") + i % 26) for i in range(3997))
    filler = "y" * 97
    text = (filler + key) * 150  # ~600 KB, no newline, almost all of it secret: every cut falls in one
    r, w = os.pipe()
    dest = io.TextIOWrapper(io.BytesIO())
    writer = threading.Thread(target=lambda: (_write_all(w, text.encode()), os.close(w)), daemon=True)
    pump = threading.Thread(target=_pump, args=(r, dest, _Console({key}, 5)), daemon=True)
    writer.start()
    pump.start()
    pump.join(timeout=20)
    assert not pump.is_alive(), "the pump did not finish"
    os.close(r)
    out = dest.buffer.getvalue().decode()
    assert out == (filler + "***") * 150
    assert key[:12] not in out and key[-12:] not in out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        step = view[:7919]  # odd sizes, so cuts fall everywhere
        n = os.write(fd, step)
        view = view[n:]


def test_the_working_directory_is_not_masked_in_the_log(tmp_path, launches):
    launch, _ = start(tmp_path, launches, "die", env={"FAKE_ECHO_ENV": "PWD", "PWD": str(tmp_path)})
    assert launch.finish() == 7
    assert f"environment: PWD={tmp_path}" in launch.out


def port_free(port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                pass
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def test_grace_period_without_supervise_is_exit_2(tmp_path, capsys):
    from kt_launch.cli import main

    prof = write_profile(tmp_path, plain_profile("/bin/false", 30000))
    assert main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)),
                 "--grace-period", "5"]) == 2
    assert "need --supervise" in capsys.readouterr().err
