"""Which kt-kernel CPU extension variant a CPU gets: kt-kernel 0.7.2's `_cpu_detect.py` rules, as a pure function.

The first variant whose flags are all present wins; each flag also matches with underscores removed
(`avx512_vnni` ~ `avx512vnni`). `KT_KERNEL_CPU_VARIANT` overrides detection, but only with one of the
exact names below (the documented `avx512` is silently ignored), and it bypasses the hardware check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from kt_launch.core.local import OVERRIDE_ENV  # noqa: F401  (declared in core: facts/ reads it too)

if TYPE_CHECKING:  # types only
    from kt_launch.resolve.inputs import ResolveInput

RUNTIME_ENV = "runtime.env"  # where a server's override came from, as findings name it
INHERITED_ENV = "the environment's"  # kt-launch's own environment, which the server inherits (doctor's word too)

VARIANT_FLAGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("amx", ("amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16")),
    ("avx512_bf16", ("avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16")),
    ("avx512_vbmi", ("avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi")),
    ("avx512_vnni", ("avx512f", "avx512bw", "avx512_vnni")),
    ("avx512_base", ("avx512f", "avx512bw")),
    ("avx2", ("avx2",)),
)
VARIANTS = tuple(v for v, _ in VARIANT_FLAGS)


@dataclass(frozen=True)
class VariantChoice:
    variant: str  # what kt-kernel loads
    detected: str  # what the flags alone give
    override: str | None  # the valid override in effect, if any
    override_ignored: str | None  # an override value kt-kernel ignores
    missing: tuple[str, ...]  # flags the loaded variant needs but the CPU lacks (override bypassing the check)
    has_avx2: bool


def _present(flag: str, flags: frozenset[str]) -> bool:
    return flag in flags or flag.replace("_", "") in flags


def variant_missing_flags(variant: str, flags: Iterable[str]) -> tuple[str, ...]:
    norm = frozenset(f.lower().replace("_", "") for f in flags) | frozenset(f.lower() for f in flags)
    need = dict(VARIANT_FLAGS).get(variant, ())
    return tuple(f for f in need if not _present(f, norm))


def detect_variant(flags: Iterable[str]) -> str:
    """The variant auto-detection picks from CPU flags (avx2 is also the fallback)."""
    fl = list(flags)
    for variant, _ in VARIANT_FLAGS:
        if not variant_missing_flags(variant, fl):
            return variant
    return "avx2"


def choose_variant(flags: Iterable[str], override: str | None = None) -> VariantChoice:
    """What kt-kernel would load given the CPU flags and the `KT_KERNEL_CPU_VARIANT` value (None = unset)."""
    fl = [f.lower() for f in flags]
    detected = detect_variant(fl)
    has_avx2 = not variant_missing_flags("avx2", fl)
    ov = override.strip().lower() if override is not None else None
    if ov and ov in VARIANTS:
        return VariantChoice(ov, detected, ov, None, variant_missing_flags(ov, fl), has_avx2)
    ignored = override if override not in (None, "") else None
    missing = () if has_avx2 or detected != "avx2" else ("avx2",)
    return VariantChoice(detected, detected, None, ignored, missing, has_avx2)


def server_variant_override(inp: ResolveInput) -> tuple[str | None, str]:
    """The KT_KERNEL_CPU_VARIANT the planned server runs with, and where it comes from (RUNTIME_ENV or
    INHERITED_ENV): the server's environment is kt-launch's own plus runtime.env, so runtime.env wins (even set
    empty), else the inherited value (gathered only when the plan is for this machine). (None, RUNTIME_ENV): unset."""
    env = inp.config.runtime.env
    if OVERRIDE_ENV in env:
        return env[OVERRIDE_ENV], RUNTIME_ENV
    if inp.inherited_cpu_variant is not None:
        return inp.inherited_cpu_variant, INHERITED_ENV
    return None, RUNTIME_ENV
