"""The install that will run the server, as its own metadata and imports describe it. Plain values.

facts/install.py gathers them (one worker run in runtime.python, cached until the install changes);
resolve/install.py judges them. Also here: the release kt-launch is built and tested against (one declaration;
fix lines name these packages and versions, never kt-launch's own extras, which are not on the package index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# The stack kt-launch targets (pyproject's extras say the same; tests/core/test_install_gate.py checks it).
SGLANG_KT = ("sglang-kt", "0.7.2")
SGLANG_UPSTREAM = ("sglang", "0.5.23")
KT_KERNEL = ("kt-kernel", "0.7.2")
SGLANG_ROUTER = ("sglang-router", "0.3.2")


def pin(dist: tuple[str, str]) -> str:
    return f"{dist[0]}=={dist[1]}"


def pip_line(python: str, *dists: tuple[str, str]) -> str:
    """`PY -m pip install name==version ...`: the fix line for an interpreter that lacks part of the stack."""
    import shlex

    return f"{shlex.quote(python)} -m pip install {' '.join(pin(d) for d in dists)}"


@dataclass(frozen=True)
class Unmet:
    """One declared requirement of an installed distribution that the install does not meet."""

    by: str  # the distribution that requires it
    by_version: str
    name: str  # the required distribution, as the requirement spells it
    spec: str  # "==2.9.1", ">=0.4.0", "" (any version)
    installed: str | None  # the version installed, None: not installed


@dataclass(frozen=True)
class ImportResult:
    """One module the server imports at start, imported for real in the target interpreter."""

    module: str
    ok: bool
    error: str | None = None  # the exception's class name ("ImportError"), "Timeout" or "Crash"
    last_line: str | None = None  # the exception's last line, as Python printed it
    where: str | None = None  # file:line of the innermost frame


@dataclass(frozen=True)
class InstallFacts:
    """What the install gate learnt about `python`. `judged` False: not looked at (see `why_not`)."""

    python: str
    judged: bool = True
    why_not: str | None = None  # not judged: no cached answer on --dry-run, or the worker gave none (then `failed`)
    failed: bool = False  # the worker ran and gave no answer (timeout, crash): `why_not` says why
    dists: tuple[tuple[str, str], ...] = ()  # the key distributions installed: (name, version)
    unmet: tuple[Unmet, ...] = ()
    imports: tuple[ImportResult, ...] = ()
    payload_missing: tuple[str, ...] = ()  # sgl_kernel CUDA payload modules its manifest lists and are missing
    requirements_read: bool = True  # False: neither packaging nor pip's copy of it could be imported there
    from_cache: bool = False

    @classmethod
    def not_judged(cls, python: str, why: str, failed: bool = False) -> InstallFacts:
        return cls(python, judged=False, why_not=why, failed=failed)

    @classmethod
    def from_worker_json(cls, python: str, d: Mapping[str, Any], from_cache: bool = False) -> InstallFacts:
        payload = d.get("payload") or {}
        return cls(
            python=python,
            dists=tuple((str(k), str(v)) for k, v in (d.get("dists") or {}).items()),
            unmet=tuple(Unmet(str(u["by"]), str(u["by_version"]), str(u["name"]), str(u.get("spec") or ""),
                              None if u.get("installed") is None else str(u["installed"]))
                        for u in d.get("unmet") or ()),
            imports=tuple(ImportResult(str(i["module"]), bool(i["ok"]), i.get("error"), i.get("last_line"),
                                       i.get("where")) for i in d.get("imports") or ()),
            payload_missing=tuple(str(m) for m in payload.get("missing") or ()),
            requirements_read=d.get("requirements_reader") is not None,
            from_cache=from_cache,
        )
