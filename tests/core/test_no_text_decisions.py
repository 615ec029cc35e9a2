"""No code path decides by a finding code's prefix or by a message's text (issue 27): findings carry what they
stop (Finding.blocks), ReadError its file, kind, reason and line, pydantic's errors their type and ctx. This greps
the package for the ways that used to be done, so they do not come back."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "kt_launch"

PATTERNS = {
    "a finding code's prefix": re.compile(r"""(?:code|\.code\b)\s*\.startswith\(|startswith\(\(?\s*f?["']KT-|"""
                                          r"""\.code\s*\[\s*:|\.code\s*\[\s*\d"""),
    "pydantic's message text": re.compile(r"Value error, |Assertion failed, "),
    "an exception's message cut up": re.compile(r"str\((?:e|exc|err|error)\)\s*(?:\[(?!:\d+\])|\.split|\.rsplit|\.partition|"
                                               r"\.startswith|\.removeprefix|\.find|\.index)|\.args\[0\]\s*\[|"
                                               r"\[len\([\w.]*\.what\)|_without_kind|"
                                               r"(?:why|msg|message|problem|reason)\.startswith\(f?[\"'][^\"']*\.what"),
    # ReadError(what, file, reason, line): one built from a sentence would have no fields to decide by
    "a ReadError without fields": re.compile(r"""\b(?:ReadError|Missing)\(\s*f?["']"""),
    # a reason string searched for the flag that caused it (StatsFacts.skipped says it as a field)
    "a reason searched for a flag": re.compile(r"""["']--[a-z][a-z-]*["'] in (?:why|msg|message|reason|problem|"""
                                               r"""unchecked|missing|error)\b"""),
    "a finding's message read": re.compile(r"\b(?:f|finding)\.message\s*(?:\[|\.split|\.partition|\.startswith|"
                                           r"\.removeprefix|\.find)|[\"'] in (?:f|finding)\.message\b"),
}


def test_no_decision_reads_a_code_prefix_or_a_message():
    found = [f"{p.relative_to(PKG)}:{n}: {what}: {line.strip()}"
             for p in sorted(PKG.rglob("*.py")) for n, line in enumerate(p.read_text().splitlines(), 1)
             for what, pat in PATTERNS.items() if pat.search(line)]
    assert not found, "decide by fields (Finding.blocks / fields, ReadError's fields, pydantic's errors()):\n" + \
        "\n".join(found)


def test_the_patterns_catch_what_they_are_for():
    """Each pattern matches the code it was written against (so an empty result above means something)."""
    samples = {
        "a finding code's prefix": 'refusals = [f for f in fs if f.code.startswith(("KT-E1", "KT-E24"))]',
        "pydantic's message text": 'msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg',
        "an exception's message cut up": 'why = str(e).split(": ", 1)[-1]',
        "a finding's message read": 'if "not found" in f.message:',
        "a ReadError without fields": 'raise ReadError(f"{kind.what} {p}: nested deeper than 8 levels")',
        "a reason searched for a flag": 'if "--dry-run" in why or "--no-check" in why:',
    }
    for what, line in samples.items():
        assert PATTERNS[what].search(line), what
    assert PATTERNS["an exception's message cut up"].search("msg[len(MODEL_FACTS.what) + 1:]")
    assert PATTERNS["an exception's message cut up"].search("rest = str(e)[12:]")
    assert PATTERNS["an exception's message cut up"].search('why if why.startswith(f"{CACHE.what} {p}") else')
    assert not PATTERNS["an exception's message cut up"].search('f"not valid JSON ({str(e)[:160]})"')  # shortened


def test_a_read_error_carries_its_fields_and_the_message_is_built_from_them(tmp_path):
    import pickle

    import pytest

    from kt_launch.facts.reader import PROFILE, Missing, ReadError, read_json, read_yaml

    bad = tmp_path / "p.yaml"
    bad.write_text("model:\n  path: x\n  bad: [\n")
    with pytest.raises(ReadError) as yaml_error:
        read_yaml(bad, PROFILE)
    e = yaml_error.value
    assert (e.what, e.file, e.line) == ("profile", str(bad), 4) and e.reason.startswith("invalid YAML at line 4")
    assert str(e) == f"profile {bad}: {e.reason}"
    js = tmp_path / "c.json"
    js.write_text('{\n "a": 1,\n "a": 2}')
    with pytest.raises(ReadError) as dup:
        read_json(js, PROFILE)
    assert dup.value.reason == "key 'a' appears twice; keep one" and dup.value.line is None
    with pytest.raises(Missing) as missing:
        read_json(tmp_path / "none.json", PROFILE)
    assert missing.value.reason == "no such file"
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is ReadError and (again.file, again.reason, again.line, str(again)) == (e.file, e.reason, 4, str(e))


def test_pydantic_errors_are_read_by_their_type_and_ctx():
    from pydantic import BaseModel, ValidationError, field_validator

    from kt_launch.core.validation import error_text

    class M(BaseModel):
        n: int

        @field_validator("n")
        @classmethod
        def positive(cls, v):
            if v <= 0:
                raise ValueError("must be positive")
            return v

    for value, want in ((-1, "must be positive"), ("x", "Input should be a valid integer, unable to parse string "
                                                            "as an integer")):
        try:
            M(n=value)
        except ValidationError as e:
            assert error_text(e.errors()[0]) == want
