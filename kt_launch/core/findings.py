"""Findings: what a rule says about a plan. Stable codes, a message naming the field or file, a fix line.

Every code, and what each hundred is for, is declared once in core/codes.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

from kt_launch.core.codes import BLOCKS

Level = Literal["error", "warning", "info"]
Blocks = Literal["plan", "kernel", "launch", ""]
# The commands each blocking class stops (core/codes.py's BLOCKS says which class an error code has).
STOPS: dict[str, frozenset[str]] = {
    "plan": frozenset({"launch", "convert", "probe", "tune"}),
    "kernel": frozenset({"launch", "probe", "tune"}),
    "launch": frozenset({"launch"}),
    "": frozenset(),  # a warning or a note stops nothing
}


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str
    fix: str = ""
    # What the finding is about, as data (``("flag", "--port"), ("file", "sgl.yaml")``): a reader decides by these,
    # never by parsing the message. Pairs, so a Finding stays hashable; JSON shows them as an object.
    fields: tuple[tuple[str, str], ...] = ()
    # Which commands it stops (see STOPS); set from the code's declaration for an error, "" for a warning or note.
    # Not in the JSON document (its shape is docs/JSON.md's); a reader in kt-launch asks `stops(command)`.
    blocks: Blocks = ""

    def __post_init__(self):
        if not self.blocks and self.level == "error":
            object.__setattr__(self, "blocks", BLOCKS.get(self.code, "launch"))

    def stops(self, command: str) -> bool:
        """Whether this finding refuses `command` ("launch", "convert", "probe", "tune"): only an error does."""
        return self.level == "error" and command in STOPS[self.blocks]

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


def about(findings, **fields: str | None) -> list[Finding]:
    """The findings with what they are about added as fields (``key=..., file=...``), where they do not say it yet."""
    from dataclasses import replace

    return [replace(f, fields=f.fields + tuple(p for p in _fields(fields) if f.field(p[0]) is None)) for f in findings]


def has_errors(findings) -> bool:
    return any(f.level == "error" for f in findings)
