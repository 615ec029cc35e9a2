"""The install gate's verdicts: a pure function of InstallFacts (core/install.py), used by plans and doctor alike.

Severity, honestly:
* an unmet requirement on a package that decides whether the server starts (SGLang, kt-kernel, torch,
  transformers(-kt), flashinfer, sgl_kernel's distribution) is an error, unless it is known to be harmless
  (HARMLESS: kt-kernel's torch pin), which is an info saying why;
* any other unmet requirement of those packages is one warning per requirer: the metadata says so, but only the
  imports below tell whether the server needs it before it reads a weight;
* a module the server imports at start that fails to import is an error quoting the exception's last line.

`blocks` False (--dry-run, --host-facts plans) turns each error into its warning twin: a plan only warns.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput

if TYPE_CHECKING:  # types only: a --dry-run without install facts never imports them
    from kt_launch.core.install import InstallFacts, Unmet

# Normalized names of the distributions whose unmet requirement stops the server.
DECISIVE = frozenset({"sglang-kt", "sglang", "kt-kernel", "torch", "transformers-kt", "transformers",
                      "flashinfer-python", "sgl-kernel", "sglang-kernel"})
# (requirer, required) -> why an unmet pin does no harm (evidence cited).
HARMLESS = {
    ("kt-kernel", "torch"): "kt-kernel's extension does not link libtorch (readelf: only libnuma, libgomp, libhwloc "
                            "and libstdc++; tests/backend/setup_env.sh), so it works with the torch the server uses",
}
SHOWN = 12  # requirements named in one grouped warning


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req(u: Unmet) -> str:
    return f"{u.name}{u.spec}"


def _pip(python: str, reqs: list[str]) -> str:
    return f"{shlex.quote(python)} -m pip install " + " ".join(shlex.quote(r) for r in reqs)


def _have(u: Unmet) -> str:
    return "not installed" if u.installed is None else f"{u.installed} installed"


def install_findings(facts: InstallFacts | None, blocks: bool = True) -> list[Finding]:
    """Verdicts on the install in runtime.python. None: the gate did not look (no SGLang or kt-kernel there)."""
    if facts is None:
        return []
    py = facts.python
    if not facts.judged:
        if facts.failed:
            return [warning("KT-W264", f"the install in {py} could not be checked: {facts.why_not}",
                            f"run {shlex.quote(py)} -c 'import sglang.launch_server, sgl_kernel, kt_kernel' to see "
                            "what fails")]
        return [info("KT-I265", f"the install in {py} was not checked: {facts.why_not}",
                     "`kt-launch check --profile ...` checks it once (then it is cached until the install changes)")]
    out: list[Finding] = []
    grouped: dict[tuple[str, str], list[Unmet]] = {}
    for u in facts.unmet:
        harmless = HARMLESS.get((norm(u.by), norm(u.name)))
        if harmless is not None:
            out.append(info("KT-I260", f"{u.by} {u.by_version} requires {_req(u)}, {_have(u)}; harmless: {harmless}"))
        elif norm(u.name) in DECISIVE:
            msg = (f"{u.by} {u.by_version} requires {_req(u)}, but {py} has "
                   f"{u.name + ' ' + u.installed if u.installed else 'no ' + u.name}: the server would fail to start "
                   f"or fail at the first request")
            fix = _pip(py, [_req(u)])
            out.append(error("KT-E260", msg, fix) if blocks else warning("KT-W260", msg, fix))
        else:
            grouped.setdefault((u.by, u.by_version), []).append(u)
    for (by, version), us in grouped.items():
        named = ", ".join(f"{_req(u)} ({_have(u)})" for u in us[:SHOWN]) + (
            f" and {len(us) - SHOWN} more" if len(us) > SHOWN else "")
        out.append(warning("KT-W261", f"{by} {version} declares {len(us)} requirement(s) that {py} does not meet: "
                           f"{named}; the import findings say which of them the server needs at start",
                           _pip(py, [_req(u) for u in us])))
    if not facts.requirements_read:
        out.append(warning("KT-W266", f"the requirements of the installed packages in {py} were not read: neither "
                           "packaging nor pip is importable there", f"{shlex.quote(py)} -m ensurepip"))
    seen: set[str] = set()
    for r in facts.imports:
        if r.ok or r.last_line in seen:
            continue
        seen.add(r.last_line or "")
        where = f" (at {r.where})" if r.where else ""
        msg = f"`import {r.module}` fails in {py}: {r.last_line}{where}; the server imports it at start and would die"
        fix = f"{shlex.quote(py)} -c 'import {r.module}' shows the whole traceback; install what it names"
        if r.module == "sgl_kernel" and facts.payload_missing:
            msg += (f"; sgl_kernel's CUDA payload is incomplete: {', '.join(facts.payload_missing)} "
                    "(listed in sgl_kernel/_payload_manifest.py) are not installed")
            fix = ("install the wheels that carry these modules (companion wheels of the KTransformers release whose "
                   f"sgl_kernel is installed; each module comes in its own distribution); {fix}")
        out.append(error("KT-E262", msg, fix) if blocks else warning("KT-W262", msg, fix))
    return out


def check_install(inp: ResolveInput, values: dict[str, Resolved]) -> list[Finding]:
    """The plan's rule: the install facts app.py gathered for runtime.python (errors only where the plan blocks)."""
    return install_findings(inp.install, inp.install_blocks)
