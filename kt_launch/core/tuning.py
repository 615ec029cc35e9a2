"""A measured thread count, as facts/tuning.py reads it from the tuning cache and resolve uses it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TunedThreads:
    """A measured thread count from `kt-launch tune` for this host, model shape and method."""

    cpuinfer: int
    detail: str  # e.g. "tuned 2026-11-28: 14 threads, 1.00 of best decode / 0.98 prefill"
    threadpool_count: int | None = None
