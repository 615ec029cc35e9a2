"""The process's own output streams: whatever a path holds, printing it never fails.

A path (argv, a profile value) may hold bytes that are not UTF-8; Python carries them as lone surrogates
(surrogateescape), which a strict encoder (PYTHONIOENCODING=utf-8, a C locale) refuses with
UnicodeEncodeError. Writing them as backslash escapes (\\udcff) shows the user which byte it is instead.
"""

from __future__ import annotations

import sys


def safe_output() -> None:
    """stdout and stderr write what they cannot encode as backslash escapes (errors="backslashreplace")."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        try:
            reconfigure(errors="backslashreplace")
        except (OSError, ValueError, TypeError):  # a closed or detached stream: its writes fail on their own
            pass
