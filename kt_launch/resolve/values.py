"""Helpers to record a resolved value with its provenance."""

from __future__ import annotations

from typing import Any

from kt_launch.core.provenance import Provenance
from kt_launch.core.plan import Resolved

def user_value(prov: Provenance, key: str, value: Any, why: str = "") -> Resolved:
    """A value the user set: its source is where it came from (profile file, env var, --set)."""
    origin = prov.of(key)
    if origin is None:
        return Resolved(value, "default", why or "built-in default")
    where = origin.where if origin.source != "profile" else f"set in {origin.where}"
    return Resolved(value, origin.source, f"{where}{'; ' + why if why else ''}")


def is_user_set(prov: Provenance, key: str, value: Any) -> bool:
    return value is not None and prov.of(key) is not None
