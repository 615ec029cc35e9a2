"""The process's own output streams: whatever a path holds, printing it never fails or rewrites the terminal.

A path (argv, a profile value) may hold bytes that are not UTF-8; Python carries them as lone surrogates
(surrogateescape), which a strict encoder (PYTHONIOENCODING=utf-8, a C locale) refuses with
UnicodeEncodeError. Writing them as backslash escapes (\\udcff) shows the user which byte it is instead.

A name may also hold control characters (`--profile $'\\e[2J'`, a profile file named with an ESC): every text
kt-launch writes to stdout or stderr passes through one filter that writes them as escapes (\\x1b), so no echoed
value can recolour, clear or forge lines of the terminal. Newlines and tabs are kt-launch's own layout. A
supervised child's output is bytes written to the stream's buffer, passed on as the child wrote it.
"""

from __future__ import annotations

import re
import sys
from typing import Any

# C0 controls but newline and tab, DEL, C1 controls (\x9b is a one-byte CSI), and the Unicode line separators
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapingStream:
    """A text stream whose write() escapes control characters; everything else (buffer, fileno, isatty, flush)
    is the wrapped stream's."""

    def __init__(self, stream: Any):
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(escape_controls(text) if isinstance(text, str) and _CONTROL.search(text) else text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def safe_output() -> None:
    """stdout and stderr write what they cannot encode as backslash escapes (errors="backslashreplace"), and
    control characters as escapes (EscapingStream)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None:
            continue
        inner = stream.wrapped if isinstance(stream, EscapingStream) else stream
        reconfigure = getattr(inner, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (OSError, ValueError, TypeError):  # a closed or detached stream: its writes fail on their own
                pass
        if not isinstance(stream, EscapingStream):
            setattr(sys, name, EscapingStream(stream))


def say(line: str) -> None:
    """A progress line on stderr (stdout carries the plan or the document); a closed stderr does not matter."""
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
