"""Facts about *this* machine beyond HostFacts (the interpreter, SGLang, sysctl), as `kt-launch doctor` sees them.

A plain dataclass so that facts/ can fill it and resolve/ can judge it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OVERRIDE_ENV = "KT_KERNEL_CPU_VARIANT"  # kt-kernel's CPU-variant override; resolve/isa.py re-exports it


@dataclass(frozen=True)
class LocalFacts:
    """Facts about *this* machine beyond HostFacts; None where unknown or not this machine."""

    python: str | None = None
    sglang_origin: str | None = None  # where find_spec found `sglang`; "" = not found; None = not checked
    sglang_dists: tuple[tuple[str, str], ...] = ()  # (distribution, version) of sglang / sglang-kt
    kt_kernel_origin: str | None = None
    numa_balancing: str | None = None  # content of /proc/sys/kernel/numa_balancing
    cpu_variant_override: str | None = None  # KT_KERNEL_CPU_VARIANT
    notes: tuple[str, ...] = field(default=())
