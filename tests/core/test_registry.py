"""The option registry is the single truth: every key is placed on every flavour, every real `--kt-*` flag is
placed, derived keys name real resolver steps, the README table is generated from it, and no settable key
can be silently dropped (property test over keys x flavours x values)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.support import XEON16, plan_for
from kt_launch.core.errors import ConfigError
from kt_launch.core.options import FLAVORS, OPTIONS, PASS_THROUGH_ONLY, SECTIONS, Flag, flags_of
from kt_launch.render.argv import render_command
from kt_launch.render.docs import END, START, key_table
from kt_launch.core.options import DERIVED
from kt_launch.resolve.pipeline import STEPS

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
DUMPS = {"sglang-kt": DATA / "parser_sglang-kt_0.7.2.json", "sglang": DATA / "parser_sglang_0.5.23.json"}
PLAIN = REPO / "configs" / "deepseek-v2-lite.yaml"
LORA = REPO / "configs" / "deepseek-v2-lite-lora.yaml"


def _dump_flags(flavour: str) -> set[str]:
    doc = json.loads(DUMPS[flavour].read_text())
    return {s for o in doc["options"] for s in o.get("option_strings", ())}


def test_every_option_answers_every_flavour_and_lives_in_a_section():
    for o in OPTIONS:
        assert set(o.render) == set(FLAVORS), o.key
        assert o.section in SECTIONS, o.key


def test_every_numeric_key_has_an_upper_bound():
    """A 400-digit count is refused naming its key (issue 18), not carried into the fit's float arithmetic."""
    from kt_launch.core.profile import FleetHost

    for o in OPTIONS:
        numeric = o.type in (int, float) or typing.get_origin(o.type) is typing.Union and int in typing.get_args(o.type)
        if o.type == list[int]:
            assert "item_le" in o.limits, o.key
        elif numeric:
            assert "le" in o.limits or "lt" in o.limits, o.key
    replicas = FleetHost.model_fields["replicas"].annotation
    assert "le=" in repr(replicas), replicas


def test_derived_keys_are_filled_by_exactly_one_step():
    filled = [k for s in STEPS for k in s.fills]
    assert len(filled) == len(set(filled))
    for o in OPTIONS:
        if o.resolve == DERIVED:
            assert o.key in filled, o.key


@pytest.mark.parametrize("flavour", sorted(DUMPS))
def test_every_kt_flag_of_the_real_parser_is_placed(flavour):
    """A --kt-* flag that a future fork adds fails here until it has a key or a pass-through reason."""
    real = {f for f in _dump_flags(flavour) if f.startswith("--kt-")}
    placed = flags_of(flavour) | set(PASS_THROUGH_ONLY)
    assert real - placed == set(), f"place these in kt_launch/core/options.py: {sorted(real - placed)}"


@pytest.mark.parametrize("flavour", sorted(DUMPS))
def test_every_flag_the_registry_renders_exists_in_the_real_parser(flavour):
    assert flags_of(flavour) - _dump_flags(flavour) == set()


def test_readme_key_table_is_generated_from_the_registry():
    readme = (REPO / "README.md").read_text()
    block = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == key_table(), "README drifted: run `kt-launch schema --readme README.md`"


# -- no silent drop ----------------------------------------------------------------------------

def _values(o) -> st.SearchStrategy:
    """Values of the option's type, within its limits (out-of-limit values are the exit-2 branch, tested too)."""
    tp, lim = o.type, dict(o.limits)
    if typing.get_origin(tp) is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=lim.get("ge", -3), max_value=lim.get("le", 200_000))
    if tp is float:
        return st.floats(min_value=lim.get("ge", 0.001), max_value=lim.get("le", 64.0), allow_nan=False)
    if tp is str:
        return st.text(st.sampled_from("abcxyz019-_./:"), min_size=1, max_size=12).filter(lambda s: s.strip() == s)
    if typing.get_origin(tp) is list and typing.get_args(tp) == (int,):
        return st.lists(st.integers(0, 3), min_size=1, max_size=2)
    if typing.get_origin(tp) is dict:
        return st.dictionaries(st.sampled_from(["FOO", "BAR_1"]), st.text("abc", min_size=1, max_size=3),
                               min_size=1, max_size=2)
    return st.lists(st.text(st.sampled_from("abc/"), min_size=1, max_size=6), min_size=1, max_size=2)


SETTABLE = [o for o in OPTIONS if o.settable and o.key not in ("runtime.flavor", "model.path")]
CASES = st.sampled_from(SETTABLE).flatmap(lambda o: st.tuples(st.just(o), st.sampled_from(FLAVORS), _values(o)))


def _text(v) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v).lower() if isinstance(v, bool) else str(v)


def _plan(profile: Path, flavour: str, extra: list[str]):
    plan = plan_for(profile, XEON16, sets=[f"runtime.flavor={flavour}", *extra])
    return plan, render_command(plan)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES)
def test_no_settable_key_is_silently_dropped(case):
    """For every key, flavour and a value unlike the default and the derived one: the command changes, a finding
    names the key, or the input is refused (exit 2) naming the key."""
    o, flavour, value = case
    profile = LORA if o.section == "moe_lora" else PLAIN
    base, base_cmd = _plan(profile, flavour, [])
    if base.get(o.key) == value or (base.get(o.key) is None and (value is False or value in ([], {}))):
        return  # what kt-launch would choose anyway: nothing to drop
    item = f"{o.key}={_text(value)}"
    try:
        plan, cmd = _plan(profile, flavour, [item])
    except ConfigError as e:
        assert o.key in str(e), (item, str(e))
        return
    named = [f for f in plan.findings + cmd.findings if o.key in f.message]
    changed = (cmd.argv, cmd.env) != (base_cmd.argv, base_cmd.env)
    assert changed or named, f"{item} on {flavour}: no change in argv/env and no finding names it"
    spec = o.render[flavour]
    if isinstance(spec, Flag) and not named and plan.get(o.key) == value and not isinstance(value, bool):
        assert any(a == n or a.startswith(n + "=") for a in cmd.argv for n in spec.names), (item, cmd.argv)
