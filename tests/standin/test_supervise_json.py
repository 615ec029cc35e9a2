"""`--supervise --json` against the sglang-kt stand-in: stdout carries only the supervisor's events, one JSON object
per line, each valid against schema/supervise-events.schema.json; the server's own log goes to stderr. A good
server gives a `ready` event with each smoke request's TTFT and decode tok/s; a bad one under --smoke on a
`smoke_failed` event (the error findings with their fields, the log tail), then `exit` with code 4; nothing is
left running."""

from __future__ import annotations

import json
import signal

import pytest

from kt_launch.cli import main
from operate.support import pid_gone, plain_profile, write_host, write_profile
from standin.support import EVENTS_SCHEMA, read_events
from standin.test_smoke_supervise import start


def test_good_server_ready_event_carries_the_smoke_timings(tmp_path, launches):
    launch = start(tmp_path, launches, "good", extra=("--json",))
    launch.wait_for(lambda: '"event": "ready"' in launch.out, timeout=30, what="the ready event")
    child = launch.child_pid()
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    assert pid_gone(child)
    events = read_events(launch.out)
    assert [e["event"] for e in events] == ["ready", "exit"]
    ready, end = events
    assert ready["role"] == "server" and ready["name"] is None and ready["model"] == "dsv2-lite"
    assert ready["url"].startswith("http://127.0.0.1:") and ready["openai_base_url"] == ready["url"] + "/v1"
    smoke = ready["smoke"]
    assert smoke["mode"] == "on" and smoke["ok"] is True and smoke["findings"] == []
    assert [r["request"] for r in smoke["requests"]] == ["request 1 (chat, temperature 0)",
                                                          "request 2 (the same chat again)"]
    for r in smoke["requests"]:
        assert r["ok"] and r["status"] == 200 and r["completion_tokens"] > 0
        assert r["ttft_s"] is not None and r["ttft_s"] >= 0 and r["decode_tok_s"] > 0
    assert end == {**end, "code": 143, "reason": "signal", "signal": "SIGTERM"}
    # the server's own lines (the stand-in prints its port and uvicorn's line on stdout) went to stderr
    assert "Uvicorn running" in launch.err and "STANDIN_PORT=" in launch.err
    assert "smoke test: 2 request(s) passed" in launch.err  # the human ready message is still there


@pytest.mark.parametrize("mode,code,failed", [("gibberish", "KT-E562", ["request 1", "request 2"]),
                                              ("crash2", "KT-E560", ["request 2"])])
def test_bad_server_smoke_failed_event_then_exit_4(tmp_path, launches, mode, code, failed):
    launch = start(tmp_path, launches, mode, extra=("--json", "--smoke-timeout", "5"))
    assert launch.finish(timeout=60) == 4, launch.err
    assert pid_gone(launch.child_pid())
    events = read_events(launch.out)
    assert [e["event"] for e in events] == ["smoke_failed", "exit"]
    bad, end = events
    assert bad["stopping"] is True and bad["mode"] == "on" and bad["role"] == "server"
    assert [f["code"] for f in bad["findings"]] == [code] * len(failed)
    for f, name in zip(bad["findings"], failed):
        assert f["level"] == "error" and f["fields"]["request"].startswith(name + " (")
        assert f["fields"]["url"] == bad["url"] and "Uvicorn running" in f["fields"]["log_tail"]
    assert [r["ok"] for r in bad["requests"]][-1] is False
    assert any("Uvicorn running" in line for line in bad["log_tail"])
    assert end["code"] == 4 and end["reason"] == "smoke_failed" and end["signal"] is None
    if mode == "crash2":  # it died on its own during the smoke test: its exit status is the server's
        assert end["returncode"] != 0


def test_smoke_warn_failure_then_ready_with_the_warnings(tmp_path, launches):
    launch = start(tmp_path, launches, "gibberish", smoke="warn", extra=("--json",))
    launch.wait_for(lambda: '"event": "ready"' in launch.out, timeout=30, what="the ready event")
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    events = read_events(launch.out)
    assert [e["event"] for e in events] == ["smoke_failed", "ready", "exit"]
    bad, ready, _ = events
    assert bad["stopping"] is False and {f["code"] for f in bad["findings"]} == {"KT-W562"}
    assert ready["smoke"]["ok"] is False and {f["code"] for f in ready["smoke"]["findings"]} == {"KT-W562"}


def test_plan_errors_end_in_an_exit_event(tmp_path, capsys):
    prof = write_profile(tmp_path, plain_profile("/nonexistent/python", 30000))
    assert main(["--profile", str(prof), "--host-facts", str(write_host(tmp_path)), "--supervise", "--json"]) == 3
    (end,) = read_events(capsys.readouterr().out)
    assert end["event"] == "exit" and end["code"] == 3 and end["reason"] == "plan_errors"
    assert end["findings"] and all(f["level"] == "error" for f in end["findings"])


def test_json_needs_dry_run_or_supervise(tmp_path, capsys):
    prof = write_profile(tmp_path, plain_profile("/bin/false", 30000))
    assert main(["--profile", str(prof), "--no-check", "--json"]) == 2
    assert "--json needs --dry-run" in capsys.readouterr().err


def test_committed_events_schema_is_the_generated_one(capsys):
    assert main(["schema", "--events"]) == 0
    assert EVENTS_SCHEMA.read_text() == capsys.readouterr().out, \
        "schema/supervise-events.schema.json is stale: run `kt-launch schema --events -o FILE` into it"
    schema = json.loads(EVENTS_SCHEMA.read_text())
    assert {d["$ref"].rsplit("/", 1)[1] for d in schema["oneOf"]} == {"ready", "smoke_failed", "exit"}


def test_docs_list_every_field_of_every_event():
    """docs/JSON.md's tables and the schema declare the same fields per event."""
    import re

    doc = (EVENTS_SCHEMA.parents[1] / "docs" / "JSON.md").read_text()
    section = doc.split("\n## `kt-launch --profile P --supervise --json`", 1)[1].split("\n## ", 1)[0]
    schema = json.loads(EVENTS_SCHEMA.read_text())
    for event in ("ready", "smoke_failed", "exit"):
        table = section.split(f"\n### `{event}`\n", 1)[1].split("\n### ", 1)[0]
        assert set(re.findall(r"^\| `(\w+)` \|", table, re.M)) == set(schema["$defs"][event]["properties"]), event


def test_an_event_line_masks_secrets_and_stays_one_ascii_line():
    """Secrets masked before encoding (a secret with quotes would be escaped in the JSON and slip past a scrub of
    the line); a megabyte log line is cut; control characters and non-finite numbers never reach the line."""
    from kt_launch.core.findings import error
    from kt_launch.render.events import event_line, smoke_failed_event

    secret = 'sk-"quoted"\\-secret-0123456789'
    rows = [{"request": "request 1", "kind": "chat", "status": 200, "ok": False, "problem": "junk",
             "prompt_tokens": 3, "completion_tokens": 2, "ttft_s": 0.1, "decode_tok_s": float("inf"),
             "seconds": 0.2, "text": f"\x1b[2J{secret}\u2028"}]
    found = [error("KT-E562", f"smoke test failed: {secret}", "fix", {"request": "request 1", "log_tail": secret})]
    line = event_line(smoke_failed_event("server", None, "http://127.0.0.1:1", "on", rows, found,
                                         [f"--api-key {secret}", "x" * (1 << 20)], True), {secret})
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    assert "quoted" not in line and "0123456789" not in line
    doc = json.loads(line)
    assert doc["requests"][0]["decode_tok_s"] is None and doc["requests"][0]["text"].startswith("\x1b[2J***")
    assert doc["log_tail"][0] == "--api-key ***" and len(doc["log_tail"][1]) == 2000
    assert doc["findings"][0]["fields"]["log_tail"] == "***"


def test_a_known_crash_before_ready_is_the_exit_events_findings(tmp_path, launches):
    """A CUDA OOM at weight load (the fake SGLang prints it and exits 1): `exit` says died_before_ready, the
    server's own status, and the crash signature's finding by its code."""
    from operate.test_supervise import start as start_fake
    from operate.test_supervise_loop import CRASHES

    lines, code = CRASHES["oom-weights"]
    (tmp_path / "lines.txt").write_text(lines)
    launch, _ = start_fake(tmp_path, launches, "crash", extra=["--json"],
                           env={"FAKE_LINES": str(tmp_path / "lines.txt")})
    assert launch.finish(timeout=60) == 1
    (end,) = read_events(launch.out)
    assert end == {**end, "event": "exit", "code": 1, "reason": "died_before_ready", "returncode": 1}
    assert code in [f["code"] for f in end["findings"]]
    assert "Load weight begin" in launch.err and "Load weight begin" not in launch.out


def test_a_restarted_server_is_ready_again(tmp_path, launches):
    """--restart on-failure: the first start dies before ready, the restart serves: one `ready`, restarted true."""
    from operate.test_supervise import start as start_fake

    launch, _ = start_fake(tmp_path, launches, "die_once", extra=["--restart", "on-failure", "--json"],
                           env={"FAKE_READY_AFTER": "0.3"})
    launch.wait_for(lambda: '"event": "ready"' in launch.out, timeout=30, what="the ready event after the restart")
    launch.signal(signal.SIGINT)
    assert launch.finish() == 130
    ready, end = read_events(launch.out)
    assert ready["restarted"] is True and ready["smoke"] is None  # the fake answers /health only: --smoke off
    assert end["reason"] == "signal" and end["signal"] == "SIGINT" and end["code"] == 130
