"""Verdicts that both a plan and `kt-launch doctor` give: one function and one code per fact.

Pure functions of facts (CPU flags, an inspected SGLang); the plan's rule tables and the doctor call
the same ones, so a fact is never reported under two codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kt_launch.core.findings import Finding, error, warning
from kt_launch.resolve.isa import OVERRIDE_ENV, VARIANTS, VariantChoice

if TYPE_CHECKING:  # types only: importing them costs start-up time on every dry-run
    from kt_launch.core.sglang import SglangFacts


def variant_override(ch: VariantChoice, where: str, host: str) -> Finding | None:
    """KT_KERNEL_CPU_VARIANT forcing a variant the CPU cannot run (SIGILL), or one kt-kernel ignores.
    `where` names the setting (runtime.env or the environment), `host` the machine."""
    if ch.override and ch.missing:
        return error("KT-E241", f"{where} {OVERRIDE_ENV}={ch.override} forces kt-kernel's {ch.variant} variant, but the "
                     f"CPU of {host} lacks {', '.join(ch.missing)}: kt-kernel skips its hardware check and dies with "
                     f"SIGILL", f"remove {OVERRIDE_ENV} (auto-detection picks {ch.detected})")
    if ch.override_ignored:
        return warning("KT-W241", f"{where} {OVERRIDE_ENV}={ch.override_ignored[:80]!r} is not a variant kt-kernel "
                       f"accepts and is ignored; it auto-detects {ch.detected}",
                       f"use one of {', '.join(VARIANTS)}, or remove it")
    return None


def no_kt_flags(facts: SglangFacts) -> Finding:
    """An inspected SGLang without any --kt-* flag."""
    return error("KT-E307", f"the SGLang in {facts.python} ({facts.describe()}) has no kt-kernel flags",
                 f"{_sglang_kt_line(facts.python)}, or point runtime.python at an interpreter that has it")


def wrapper_call_incompatible(facts: SglangFacts) -> Finding | None:
    """The installed SGLang calls KTMoEWrapper without arguments the installed kt-kernel requires."""
    if not facts.ok or facts.kt_wrapper_call_compatible is not False:
        return None
    missing = ", ".join(facts.kt_wrapper_call_missing) or "its required arguments"
    return error("KT-E317", f"{facts.describe()} calls KTMoEWrapper without {missing}, which the installed kt-kernel "
                 f"{facts.kt_kernel_version or ''} requires: the server fails while building the model",
                 f"install sglang-kt (the KTransformers fork) instead of upstream sglang: "
                 f"{_sglang_kt_line(facts.python)}")


def _sglang_kt_line(python: str) -> str:
    from kt_launch.core.install import SGLANG_KT, pip_line  # only when a fix line is written

    return pip_line(python, SGLANG_KT)
