"""What every output of kt-launch shares: the verdict line that opens the text, and the JSON schema version.

docs/JSON.md documents the JSON fields; bump SCHEMA_VERSION when a field changes meaning or goes away.
"""

from __future__ import annotations

from typing import Iterable

from kt_launch.core.findings import Finding

SCHEMA_VERSION = 1
DEFAULT_WIDTH = 100  # text width when stdout is not a terminal and COLUMNS is unset


def verdict(findings: Iterable[Finding]) -> str:
    """`OK`, `OK, N warning(s)` or `BLOCKED: N error(s)`: whether the launch would go ahead, read first."""
    levels = [f.level for f in findings]
    errors, warnings = levels.count("error"), levels.count("warning")
    if errors:
        return f"BLOCKED: {errors} error(s)" + (f", {warnings} warning(s)" if warnings else "")
    return f"OK, {warnings} warning(s)" if warnings else "OK"
