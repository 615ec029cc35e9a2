"""The table of check rules run after the values are resolved. Each entry: (inp, values) -> findings."""

from __future__ import annotations

from kt_launch.resolve.flavor_rules import RULES as FLAVOR
from kt_launch.resolve.preflight import RULES as PREFLIGHT

ALL: tuple = (*FLAVOR, *PREFLIGHT)
