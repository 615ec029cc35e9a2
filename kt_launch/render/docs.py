"""Generated documentation blocks: the README's profile key table (from the option registry) and the step graph
of docs/ARCHITECTURE.md (from the resolver's @step declarations). Tests fail when a document drifts.

Regenerate: `kt-launch schema --readme FILE` rewrites every block of FILE between its markers.
"""

from __future__ import annotations

import typing

from kt_launch.core.options import DERIVED, FLAVORS, OPTIONS, Carried, EnvVar, Flag, Refuse, Special

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
    return _t(o.type) + (" (32K, 32k)" if o.tokens else "") + (" \\| null" if o.nullable else "")


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
        derived = " Derived when unset (see the rules below)." if o.resolve == DERIVED and o.nullable else ""
        rows.append(f"| `{o.key}` | {_type(o)} | {_default(o)} | {_sglang(o)} | {o.help}{derived} |")
    return "\n".join(rows)


STEPS_START, STEPS_END = ("<!-- steps:start (generated from the @step declarations: kt-launch schema --steps) -->",
                          "<!-- steps:end -->")


def steps_table(steps) -> str:
    """The resolver steps in run order (resolve/pipeline.py's STEPS, passed in: render imports no resolve): what
    each fills and reads (values of earlier steps, or facts)."""
    rows = ["| step | fills | reads | what |", "|---|---|---|---|"]
    for s in steps:
        rows.append(f"| `{s.name}` | {', '.join(f'`{k}`' for k in s.fills)} | "
                    f"{', '.join(f'`{k}`' for k in s.reads) or '-'} | {s.doc} |")
    return "\n".join(rows)


def _replace(text: str, start: str, end: str, body: str) -> str:
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def with_table(readme: str, steps) -> str | None:
    """The text with every generated block it has replaced (None when it has none of the markers); `steps` as
    steps_table takes them."""
    blocks = ((START, END, key_table), (STEPS_START, STEPS_END, lambda: steps_table(steps)))
    found = [(a, b, make) for a, b, make in blocks if a in readme and b in readme]
    for a, b, make in found:
        readme = _replace(readme, a, b, make())
    return readme if found else None
