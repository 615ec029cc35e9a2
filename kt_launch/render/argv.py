"""LaunchPlan -> argv list and environment for the chosen flavour. Never a shell string.

Every flag comes from the option registry (core/options.py): each resolved value is rendered as its
flavour's flag or environment variable, or it becomes a finding that names the key (a refusal, or a
note that another flag carries it). Nothing is dropped without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kt_launch.core.findings import Finding, error, info
from kt_launch.core.options import BY_KEY, OPTIONS, Carried, EnvVar, Flag, Refuse, flavors_with
from kt_launch.core.plan import LaunchPlan, Resolved
from kt_launch.core.secrets import MASK
from kt_launch.render.passthrough import judge_passthrough

USER_SOURCES = ("profile", "env", "cli")


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]  # what kt-launch adds to the inherited environment
    findings: list[Finding] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


def _flag_items(key: str, names: tuple[str, ...], value: Any, out: list[Finding]) -> list[str]:
    """One flag's argv items. A value that starts with '-' is attached as `--flag=value`, so SGLang can never
    read it as a flag of its own (argparse takes `=` values verbatim); list items cannot be attached that way."""
    if isinstance(value, bool):
        return list(names) if value else []
    items: list[str] = []
    for name in names:
        if isinstance(value, (list, tuple)):
            texts = [_text(v) for v in value]
            bad = [t for t in texts if t.startswith("-")]
            if bad:
                out.append(error("KT-E304", f"{key}: item {bad[0][:80]!r} starts with '-', so SGLang would read it as a "
                                 "flag", f"rename it, or give a path like ./{bad[0][:40]}"))
                return []
            items += [name, *texts] if texts else []
        else:
            text = _text(value)
            items += [f"{name}={text}"] if text.startswith("-") else [name, text]
    if any("\x00" in i for i in items):
        out.append(error("KT-E304", f"{key}: the value holds a NUL byte, which no command line can carry",
                         f"remove it from {key}"))
        return []
    return items


def _shown(key: str, value: Any) -> str:
    o = BY_KEY.get(key)
    return MASK if o is not None and o.secret else repr(value)[:80]


def _render_one(plan: LaunchPlan, key: str, r: Resolved, argv: list[str], env: dict[str, str],
                out: list[Finding]) -> None:
    spec = BY_KEY[key].render[plan.flavor]
    value = r.value
    if value is None or value is False or value == [] or value == {}:
        return  # unset, or a switch left off: SGLang's own default
    user = r.source in USER_SOURCES
    if isinstance(spec, Flag):
        if spec.omit_derived and r.source == "derived":
            return
        missing = [n for n in spec.names if plan.accepted_flags is not None and n not in plan.accepted_flags]
        if missing:
            newer = f" ({plan.flavor} {spec.since} has it)" if spec.since else ""
            if not user:  # kt-launch's own choice: the installed SGLang keeps its default, said, never blocked
                out.append(info("KT-I305", f"{key}={_shown(key, value)} is left out: the installed SGLang "
                                f"({plan.flavor}) has no {missing[0]}{newer}; it uses its own default"))
                return
            has = flavors_with(missing[0])
            out.append(error("KT-E301", f"{key} needs {missing[0]}, which the installed SGLang ({plan.flavor}) does not "
                             f"accept{newer}", f"upgrade {plan.flavor}{' to ' + spec.since if spec.since else ''}, use "
                             f"runtime.flavor: {' or '.join(has)}, or remove {key}" if has else f"remove {key}"))
            return
        argv += _flag_items(key, spec.names, value, out)
    elif isinstance(spec, EnvVar):
        env[spec.name] = _text(value)
    elif isinstance(spec, Carried):
        if user:
            out.append(info("KT-I303", f"{key}={_shown(key, value)} has no flag of its own on {plan.flavor}: {spec.why}"))
    elif isinstance(spec, Refuse):
        if user or not spec.user_only:
            out.append(error("KT-E301", f"{key} cannot be expressed on {plan.flavor}: {spec.why}",
                             spec.fix or f"remove {key}"))


def render_command(plan: LaunchPlan) -> Command:
    argv = [plan.get("runtime.python"), "-m", "sglang.launch_server"]
    env: dict[str, str] = dict(plan.get("runtime.env") or {})  # explicit keys below win over runtime.env
    findings: list[Finding] = []
    for o in OPTIONS:
        r = plan.values.get(o.key)
        if r is not None:
            _render_one(plan, o.key, r, argv, env, findings)
    extra = [str(a) for a in plan.get("server.extra_args") or []]
    findings += judge_passthrough(plan, argv[3:], extra)
    argv += extra + plan.passthrough
    return Command(argv, env, findings)
