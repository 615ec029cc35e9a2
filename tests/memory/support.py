"""Recorded hosts and the checkpoint layouts the memory tests use."""

import json
from pathlib import Path

from kt_launch.cli import main

HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"
SHARDS = {"DeepSeek-V2-Lite": 4, "DeepSeek-V3": 163, "Qwen3-30B-A3B": 16}
GiB = 1 << 30


def host(name: str) -> str:
    return str(HOSTS / f"{name}.json")


def dry_json(capsys, profile, host_name: str, *sets: str) -> tuple[int, dict]:
    """The real CLI: `kt-launch --dry-run --json` against a recorded host."""
    argv = ["--profile", str(profile), "--host-facts", host(host_name), "--dry-run", "--json"]
    for s in sets:
        argv += ["--set", s]
    rc = main(argv)
    return rc, json.loads(capsys.readouterr().out)


def codes(doc: dict) -> set[str]:
    return {f["code"] for f in doc["findings"]}
