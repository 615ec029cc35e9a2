"""The table of check rules run after the values are resolved. Each entry: (inp, values) -> findings."""

from __future__ import annotations

ALL: tuple = ()
