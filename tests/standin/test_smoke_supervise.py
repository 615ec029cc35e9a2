"""--supervise --smoke against the sglang-kt stand-in (tests/standin/sglang_kt.py) as the server: a good server is
announced ready with TTFT and decode tok/s; each bad mode gives its error finding, naming the request, and exit
code 4 (--smoke on) with the server stopped; --smoke warn keeps it serving. Nothing is left running.

Most launches here also carry --json (the text on stderr is the same with it): their stdout is then only the
supervisor's events (standin.support.read_events validates each against schema/supervise-events.schema.json),
the stand-in's own lines go to stderr, and the events are checked too: `ready` with each smoke request's TTFT and
decode tok/s, `smoke_failed` with the findings and the log tail, `exit` with the code and its reason."""

from __future__ import annotations

import signal

import pytest

from operate.support import Launch, free_port, pid_gone, plain_profile, write_host, write_profile
from standin.support import make_standin, read_events

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
    launch = start(tmp_path, launches, "good", extra=("--json",))
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    err = launch.err
    assert "smoke test (--smoke on): 2 request(s)" in err
    assert "smoke test: 2 request(s) passed; TTFT " in err and " tok/s (request 2)" in err
    assert (tmp_path / "requests").read_text() == "2"
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    assert pid_gone(child)
    ready, end = read_events(launch.out)
    assert ready["event"] == "ready" and ready["role"] == "server" and ready["model"] == "dsv2-lite"
    assert ready["url"].startswith("http://127.0.0.1:") and ready["openai_base_url"] == ready["url"] + "/v1"
    smoke = ready["smoke"]
    assert smoke["mode"] == "on" and smoke["ok"] is True and smoke["findings"] == []
    assert [r["request"] for r in smoke["requests"]] == ["request 1 (chat, temperature 0)",
                                                          "request 2 (the same chat again)"]
    for r in smoke["requests"]:
        assert r["ok"] and r["status"] == 200 and r["completion_tokens"] > 0
        assert r["ttft_s"] is not None and r["ttft_s"] >= 0 and r["decode_tok_s"] > 0
    assert end == {**end, "event": "exit", "code": 143, "reason": "signal", "signal": "SIGTERM"}
    # the stand-in prints its port (and server_args) on stdout: under --json that went to stderr
    assert "STANDIN_PORT=" in err and "Uvicorn running" in err


BAD = [
    ("gibberish", {}, "KT-E562", "request 1", "one character repeated: 'b'"),
    ("gibberish", {"STANDIN_GIBBERISH": "junk"}, "KT-E562", "request 1", "control character"),
    ("zero", {}, "KT-E561", "request 1", "completion_tokens 0"),
    ("crash2", {}, "KT-E560", "request 2", "the server closed the connection"),
    ("slow", {"STANDIN_TTFT_S": "30"}, "KT-E560", "request 1", "no whole answer within 1 s"),
]


@pytest.mark.parametrize("mode,env,code,req,what", BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_bad_server_is_an_error_finding_and_exit_4(tmp_path, launches, mode, env, code, req, what):
    launch = start(tmp_path, launches, mode, env=env, extra=("--smoke-timeout", "1", "--json"))
    assert launch.finish(timeout=60) == EXIT_SMOKE, launch.err
    err = " ".join(launch.err.split())
    assert f"ERROR {code}" in err or f"{code}" in err, err
    assert f"{req} (" in err and what in err, err
    assert "lines of SGLang's output: | " in err  # the log tail
    assert "is ready" not in err
    assert "the smoke test failed (--smoke on)" in err and "(exit code 4)" in err
    assert pid_gone(launch.child_pid())
    bad, end = read_events(launch.out)
    assert bad["event"] == "smoke_failed" and bad["stopping"] is True and bad["mode"] == "on"
    assert {f["code"] for f in bad["findings"]} == {code} and all(f["level"] == "error" for f in bad["findings"])
    first = bad["findings"][0]["fields"]
    assert first["request"].startswith(req + " (") and first["url"] == bad["url"]
    assert "Uvicorn running" in first["log_tail"] and any("Uvicorn running" in x for x in bad["log_tail"])
    assert bad["requests"][-1]["ok"] is False
    assert end == {**end, "event": "exit", "code": EXIT_SMOKE, "reason": "smoke_failed", "signal": None}
    if mode == "crash2":  # it died on its own during the smoke test: the server's own status
        assert end["returncode"] != 0


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
    launch = start(tmp_path, launches, "gibberish", smoke=None, server={"smoke": "warn"}, extra=("--json",))
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="the ready banner")
    err = " ".join(launch.err.split())
    assert "KT-W562" in err and "KT-E562" not in err
    assert "SGLang keeps serving" in err and "smoke test: FAILED (see above)" in err
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    assert pid_gone(child)
    bad, ready, _ = read_events(launch.out)  # a failure under warn: smoke_failed (not stopping), then ready
    assert bad["event"] == "smoke_failed" and bad["stopping"] is False and bad["mode"] == "warn"
    assert {f["code"] for f in bad["findings"]} == {"KT-W562"}
    assert ready["smoke"]["ok"] is False and {f["code"] for f in ready["smoke"]["findings"]} == {"KT-W562"}


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
