"""--supervise --smoke against the sglang-kt stand-in (tests/standin/sglang_kt.py) as the server: a good server is
announced ready with TTFT and decode tok/s; each bad mode gives its error finding, naming the request, and exit
code 4 (--smoke on) with the server stopped; --smoke warn keeps it serving. Nothing is left running."""

from __future__ import annotations

import signal

import pytest

from operate.support import Launch, free_port, pid_gone, plain_profile, write_host, write_profile
from standin.support import make_standin

EXIT_SMOKE = 4


def start(tmp_path, launches, mode: str, smoke: str = "on", env: dict | None = None, extra=(), **profile):
    exe = make_standin(tmp_path)
    port = free_port()
    prof = write_profile(tmp_path, plain_profile(exe, port, **profile))
    args = ["--profile", str(prof), "--host-facts", str(write_host(tmp_path)), "--no-check", "--supervise",
            "--grace-period", "5", *extra]
    if smoke is not None:
        args += ["--smoke", smoke]
    else:  # the profile's server.smoke decides (operate.support.Launch adds --smoke off unless --smoke is given)
        args += ["--smoke-timeout", "30"]
    launch = Launch(tmp_path, args, {"STANDIN_MODE": mode, "STANDIN_READY_AFTER": "0.2", **(env or {})})
    launches.append(launch)
    return launch


def test_good_server_is_ready_with_ttft_and_decode_rate(tmp_path, launches):
    launch = start(tmp_path, launches, "good")
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    err = launch.err
    assert "smoke test (--smoke on): 2 request(s)" in err
    assert "smoke test: 2 request(s) passed; TTFT " in err and " tok/s (request 2)" in err
    assert (tmp_path / "requests").read_text() == "2"
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    assert pid_gone(child)


BAD = [
    ("gibberish", {}, "KT-E562", "request 1", "one character repeated: 'b'"),
    ("gibberish", {"STANDIN_GIBBERISH": "junk"}, "KT-E562", "request 1", "control character"),
    ("zero", {}, "KT-E561", "request 1", "completion_tokens 0"),
    ("crash2", {}, "KT-E560", "request 2", "the server closed the connection"),
    ("slow", {"STANDIN_TTFT_S": "30"}, "KT-E560", "request 1", "no whole answer within 1 s"),
]


@pytest.mark.parametrize("mode,env,code,req,what", BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_bad_server_is_an_error_finding_and_exit_4(tmp_path, launches, mode, env, code, req, what):
    launch = start(tmp_path, launches, mode, env=env, extra=("--smoke-timeout", "1"))
    assert launch.finish(timeout=60) == EXIT_SMOKE, launch.err
    err = " ".join(launch.err.split())
    assert f"ERROR {code}" in err or f"{code}" in err, err
    assert f"{req} (" in err and what in err, err
    assert "lines of SGLang's output: | " in err  # the log tail
    assert "is ready" not in err
    assert "the smoke test failed (--smoke on)" in err and "(exit code 4)" in err
    assert pid_gone(launch.child_pid())


def test_garbage_above_the_prefill_threshold_fails_the_long_request(tmp_path, launches):
    launch = start(tmp_path, launches, "garbage_above", kt={"gpu_prefill_token_threshold": 40})
    assert launch.finish(timeout=60) == EXIT_SMOKE, launch.err
    err = " ".join(launch.err.split())
    assert "3 request(s)" in err
    assert "request 3 (chat, a prompt longer than kt.gpu_prefill_token_threshold 40) failed" in err
    assert "request 1 (" not in err.split("KT-E562", 1)[1].split("fix:", 1)[0]  # only the long one failed
    assert pid_gone(launch.child_pid())


def test_smoke_warn_keeps_the_server_serving(tmp_path, launches):
    """server.smoke: warn in the profile (the --smoke option would do the same, and beats it)."""
    launch = start(tmp_path, launches, "gibberish", smoke=None, server={"smoke": "warn"})
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    err = " ".join(launch.err.split())
    assert "KT-W562" in err and "KT-E562" not in err
    assert "SGLang keeps serving" in err and "smoke test: FAILED (see above)" in err
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    assert pid_gone(child)


def test_smoke_off_sends_nothing(tmp_path, launches):
    launch = start(tmp_path, launches, "gibberish", smoke="off")
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    assert "smoke test" not in launch.err and not (tmp_path / "requests").exists()
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143


def test_smoke_needs_supervise(tmp_path, capsys):
    from kt_launch.cli import main

    prof = write_profile(tmp_path, plain_profile("/bin/false", 30000))
    assert main(["--profile", str(prof), "--no-check", "--host-facts", str(write_host(tmp_path)), "--smoke",
                 "warn"]) == 2
    assert "--smoke need --supervise" in capsys.readouterr().err


def test_a_signal_during_the_smoke_test_stops_everything(tmp_path, launches):
    """SIGTERM while a smoke request waits on a slow server: the request is cancelled, the server stopped, exit
    143 (the signal's, not the smoke test's), nothing left."""
    launch = start(tmp_path, launches, "slow", env={"STANDIN_TTFT_S": "60"})
    launch.wait_for(lambda: (tmp_path / "requests").exists(), timeout=30, what="the first smoke request")
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    assert launch.finish(timeout=30) == 143
    assert "is ready" not in launch.err and "KT-E56" not in launch.err
    assert pid_gone(child)
