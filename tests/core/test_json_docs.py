"""docs/JSON.md documents the JSON outputs: every top-level field each command prints is in its table, and
every document carries schema_version."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kt_launch.cli import main

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "JSON.md").read_text()


def _fields(heading_start: str) -> set[str]:
    sections = [s for s in DOC.split("\n## ")[1:] if s.startswith(heading_start)]
    assert sections, heading_start
    return set(re.findall(r"^\| `(\w+)` \|", sections[0], re.M))


def _json(capsys, *argv) -> dict:
    rc = main(list(argv))
    out = capsys.readouterr().out
    assert rc in (0, 3), out
    return json.loads(out)


def test_dry_run_json_fields(capsys, host_file):
    doc = _json(capsys, "--profile", str(REPO / "configs" / "demo.yaml"), "--dry-run", "--json", "--no-check",
                "--host-facts", str(host_file))
    assert doc["schema_version"] == 1 and doc["verdict"].startswith(("OK", "BLOCKED"))
    assert set(doc) <= _fields("`kt-launch --dry-run --json` and `kt-launch check --json` (one")
    assert {"schema_version", "verdict", "ok", "argv", "findings"} <= set(doc)


def test_check_json_is_the_dry_run_json(capsys, host_file):
    args = ["--profile", str(REPO / "configs" / "demo.yaml"), "--json", "--no-check", "--host-facts", str(host_file)]
    assert _json(capsys, "check", *args) == _json(capsys, "--dry-run", *args)


def test_doctor_json_fields(capsys):
    doc = _json(capsys, "doctor", "--json")
    assert doc["schema_version"] == 1
    assert set(doc) <= _fields("`kt-launch doctor --json`")


def test_fit_json_fields(capsys, host_file):
    doc = _json(capsys, "fit", "--profile", str(REPO / "configs" / "demo.yaml"), "--json", "--host-facts",
                str(host_file))
    assert doc["schema_version"] == 1
    assert set(doc) <= _fields("`kt-launch fit --json`")
