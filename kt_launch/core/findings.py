"""Findings: what a rule says about a plan. Stable codes, a message naming the field or file, a fix line.

Every code, and what each hundred is for, is declared once in core/codes.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str
    fix: str = ""
    # What the finding is about, as data (``("flag", "--port"), ("file", "sgl.yaml")``): a reader decides by these,
    # never by parsing the message. Pairs, so a Finding stays hashable; JSON shows them as an object.
    fields: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        d = {"level": self.level, "code": self.code, "message": self.message, "fix": self.fix}
        if self.fields:
            d["fields"] = dict(self.fields)
        return d

    def field(self, name: str) -> str | None:
        return dict(self.fields).get(name)


def _fields(fields: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in (fields or {}).items() if v is not None)


def error(code: str, message: str, fix: str = "", fields: Mapping[str, str] | None = None) -> Finding:
    return Finding("error", code, message, fix, _fields(fields))


def warning(code: str, message: str, fix: str = "", fields: Mapping[str, str] | None = None) -> Finding:
    return Finding("warning", code, message, fix, _fields(fields))


def info(code: str, message: str, fix: str = "", fields: Mapping[str, str] | None = None) -> Finding:
    return Finding("info", code, message, fix, _fields(fields))


def has_errors(findings) -> bool:
    return any(f.level == "error" for f in findings)
