"""pydantic's validation errors read by their fields (type, loc, msg, ctx), never by cutting up their text.

A validator that raises ValueError("...") shows in `errors()` as type "value_error" with the exception in
ctx["error"]; its `msg` wraps that message in pydantic's own words, which kt-launch does not show.
"""

from __future__ import annotations

from typing import Any, Mapping


def error_text(err: Mapping[str, Any]) -> str:
    """The sentence for one entry of a ValidationError's errors(): a validator's own message, else pydantic's."""
    ctx = err.get("ctx") or {}
    if err.get("type") == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    return str(err.get("msg"))
