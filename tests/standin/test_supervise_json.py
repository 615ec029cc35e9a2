"""`--supervise --json`: what needs no server. The launches under --json ride on the smoke and supervisor tests
that start one anyway (tests/standin/test_smoke_supervise.py: ready with the smoke timings, smoke_failed and exit 4
for every bad mode, warn; tests/operate/test_supervise_loop.py: a restarted server's ready, a known crash's exit
event; tests/fleet/test_smoke_fleet.py: a fleet's events), so --json adds no start-up to the suite. Here: a plan
with errors ends in an `exit` event, --json still needs --dry-run or --supervise, the committed schema is the
generated one and docs/JSON.md lists its fields, and an event line masks secrets."""

from __future__ import annotations

import json

from kt_launch.cli import main
from operate.support import plain_profile, write_host, write_profile
from standin.support import EVENTS_SCHEMA, read_events


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

