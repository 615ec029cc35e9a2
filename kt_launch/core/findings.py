"""Findings: what a rule says about a plan. Stable codes, a message naming the field or file, a fix line.

Every code, and what each hundred is for, is declared once in core/codes.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str
    fix: str = ""
    key: str | None = None  # the profile or config.json key the finding is about, where one is
    method: str | None = None  # the kt-kernel method it is about, where one is

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("key", "method")}


def error(code: str, message: str, fix: str = "", key: str | None = None, method: str | None = None) -> Finding:
    return Finding("error", code, message, fix, key, method)


def warning(code: str, message: str, fix: str = "") -> Finding:
    return Finding("warning", code, message, fix)


def info(code: str, message: str, fix: str = "") -> Finding:
    return Finding("info", code, message, fix)


def has_errors(findings) -> bool:
    return any(f.level == "error" for f in findings)
