"""The YAML text of a profile that `kt-launch init` writes: keys in the registry's section order, one comment per
key. Pure: the values and comments come in, text goes out (no yaml library: the few value kinds a profile from
init holds are written by hand, strings quoted whenever a YAML reader could take them for anything else)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from kt_launch.core.options import SECTIONS

# Written without quotes: a path with a "/" (no YAML 1.1 resolver matches one), or a word that starts with a letter
# and is none of YAML's booleans or nulls. Anything else is double-quoted.
_PATH = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./~+-]*")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_COMMENT_COLUMN = 40


@dataclass(frozen=True)
class Line:
    """One profile key: `key` in registry vocabulary ("kt.cpuinfer"), `value` as written (None = null)."""

    key: str
    value: Any
    comment: str = ""


def scalar(v: Any) -> str:
    """A value as YAML flow text that reads back as the same value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, float):  # YAML 1.1 reads 1e-05 as a string: its floats need a "." in the mantissa
        t = repr(v)
        return t.replace("e", ".0e", 1) if "e" in t and "." not in t else t
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(str(k))}: {scalar(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if ("/" in s and _PATH.fullmatch(s)) or (_WORD.fullmatch(s) and s.lower() not in _RESERVED):
        return s
    return quoted(s)


def quoted(s: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, the rest escaped (a line break, a control
    character or U+2028 in a path must not end the line)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F or (0xA0 <= o and o not in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)):
            out.append(ch)
        else:
            out.append(f"\\u{o:04x}")
    out.append('"')
    return "".join(out)


def comment_text(text: str) -> str:
    """One comment line's text: line breaks and other control characters shown as spaces; the indent is kept."""
    indent = text[:len(text) - len(text.lstrip(" "))]
    return indent + " ".join("".join(c if c.isprintable() else " " for c in text).split())


def profile_yaml(header: Sequence[str], lines: Sequence[Line]) -> str:
    """`# header` lines, then every section that has a line, its keys in the order given, comments aligned."""
    out = [f"# {comment_text(h)}".rstrip() for h in header]
    by_section: dict[str, list[Line]] = {}
    for ln in lines:
        by_section.setdefault(ln.key.split(".", 1)[0], []).append(ln)
    for section in [s for s in SECTIONS if s in by_section] + [s for s in by_section if s not in SECTIONS]:
        out.append(f"{section}:")
        rows = [(f"  {ln.key.split('.', 1)[1]}: {scalar(ln.value)}", comment_text(ln.comment))
                for ln in by_section[section]]
        width = min(_COMMENT_COLUMN, max(len(left) for left, _ in rows))
        for left, note in rows:
            out.append(f"{left:<{width}}  # {note}" if note else left)
    return "\n".join(out) + "\n"
