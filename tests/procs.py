"""Process helpers shared by tests that kill real children."""

from __future__ import annotations

import time


def state_after_kill(pid: int, tries: int = 100) -> str:
    """The /proc state of `pid` once a SIGKILL had time to land: "gone", "Z" or "X" unless it still runs.
    SIGKILL is delivered asynchronously, so poll for a few seconds."""
    state = "R"
    for _ in range(tries):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            state = "gone"
        if state in ("Z", "X", "gone"):
            break
        time.sleep(0.05)
    return state
