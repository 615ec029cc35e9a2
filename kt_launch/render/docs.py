"""The README's profile key table, generated from the option registry (tests fail when README drifts).

Regenerate: `kt-launch schema --readme README.md` rewrites the block between the markers.
"""

from __future__ import annotations

import typing

from kt_launch.core.options import FLAVORS, OPTIONS, Carried, EnvVar, Flag, Refuse, Special

START, END = "<!-- profile-keys:start (generated from kt_launch/core/options.py) -->", "<!-- profile-keys:end -->"


def _t(tp) -> str:
    """A type as a profile writer reads it: `int`, `a \\| b`, `list[str]`, `{...}` for a nested mapping."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin is typing.Union:
        return " \\| ".join(_t(a) for a in args)
    if origin in (list, tuple):
        return f"list[{_t(args[0])}]" if args else "list"
    if origin is dict:
        return f"map of {_t(args[0])} to {_t(args[1])}"
    if isinstance(tp, (str, typing.ForwardRef)):
        name = tp if isinstance(tp, str) else tp.__forward_arg__
        return "{name, path}" if name == "NamedLora" else "{...}"
    if isinstance(tp, type) and tp not in (int, float, bool, str):
        return "{...}"
    return getattr(tp, "__name__", str(tp))


def _type(o) -> str:
    return _t(o.type) + (" \\| null" if o.nullable else "")


def _default(o) -> str:
    if o.required:
        return "required"
    if isinstance(o.default, tuple):
        return "{}" if typing.get_origin(o.type) is dict else "[]"
    return "null" if o.default is None else str(o.default).lower() if isinstance(o.default, bool) else str(o.default)


def _render(spec) -> str:
    if isinstance(spec, Flag):
        return " ".join(f"`{n}`" for n in spec.names)
    if isinstance(spec, EnvVar):
        return f"env `{spec.name}`"
    if isinstance(spec, Carried):
        return f"carried: {spec.why}"
    if isinstance(spec, Refuse):
        return "refused"
    if isinstance(spec, Special):
        return spec.why
    return "?"


def _sglang(o) -> str:
    specs = {f: _render(o.render[f]) for f in FLAVORS}
    if len(set(specs.values())) == 1:
        return specs[FLAVORS[0]]
    return "; ".join(f"{f}: {s}" for f, s in specs.items())


def key_table() -> str:
    rows = ["| key | type | default | how it reaches SGLang | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        if not o.settable:
            continue
        derived = " Derived when unset (see the rules below)." if o.resolve.startswith("derived:") and o.nullable else ""
        rows.append(f"| `{o.key}` | {_type(o)} | {_default(o)} | {_sglang(o)} | {o.help}{derived} |")
    return "\n".join(rows)


def with_table(readme: str) -> str | None:
    """README text with the generated block replaced (None when the markers are missing)."""
    if START not in readme or END not in readme:
        return None
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{key_table()}\n{END}{tail}"

