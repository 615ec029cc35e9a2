"""One finding-code registry (core/codes.py): every code the source emits is declared there, once, and used."""

from __future__ import annotations

import re
from pathlib import Path

from kt_launch.core.codes import CODES

PKG = Path(__file__).resolve().parents[2] / "kt_launch"
CODE = re.compile(r'"(KT-[EWI]\d{3})"')


def _emitted() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        if f.name == "codes.py":
            continue
        for code in CODE.findall(f.read_text()):
            used.setdefault(code, set()).add(str(f.relative_to(PKG)))
    return used


def test_every_emitted_code_is_declared():
    used = _emitted()
    assert len(used) > 80
    undeclared = {c: sorted(w) for c, w in used.items() if c not in CODES}
    assert not undeclared, f"declare these in kt_launch/core/codes.py: {undeclared}"


def test_no_declared_code_is_dead():
    used = _emitted()
    assert not sorted(set(CODES) - set(used)), "remove codes nothing emits (or emit them)"


def test_codes_are_well_formed_and_meanings_unique():
    assert all(re.fullmatch(r"KT-[EWI][1-7]\d\d", c) for c in CODES)
    meanings = [m.strip().lower() for m in CODES.values()]
    assert len(meanings) == len(set(meanings)), "two codes declared for the same fact"


def test_blocking_classes_are_declared_per_code_and_findings_carry_them():
    """Which commands an error stops is declared per code (core/codes.py BLOCKS) and read from the finding,
    never from a code's number: the core plan (KT-E1xx) stops every command, the CPU variant (KT-E24x) the
    ones that run kt-kernel, a file error only the launch."""
    from kt_launch.core.codes import BLOCKS
    from kt_launch.core.findings import error, warning

    assert set(BLOCKS) <= {c for c in CODES if c.startswith("KT-E")} and set(BLOCKS.values()) <= {"plan", "kernel"}
    # x19x was handed out for codes of other stages (KT-E190: a fleet's port clash), so not "plan" by number
    unclassed = [c for c in CODES if re.fullmatch(r"KT-E1[0-8]\d", c) and BLOCKS.get(c) != "plan"]
    assert not unclassed, f"a core plan error stops every command: add {unclassed} to BLOCKS in core/codes.py"
    plan, kernel, files = error("KT-E106", "x"), error("KT-E240", "x"), error("KT-E201", "x")
    assert (plan.blocks, kernel.blocks, files.blocks) == ("plan", "kernel", "launch")
    assert [plan.stops(c) for c in ("launch", "convert", "probe", "tune")] == [True] * 4
    assert [kernel.stops(c) for c in ("launch", "convert", "probe", "tune")] == [True, False, True, True]
    assert [files.stops(c) for c in ("launch", "convert", "probe", "tune")] == [True, False, False, False]
    assert not warning("KT-W240", "x").stops("launch") and "blocks" not in plan.to_json()
