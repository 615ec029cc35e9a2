"""The flags kt-launch passes on unread (after `--`, server.extra_args, and the keys of SGLang's own `--config FILE`)
judged before anything starts, or declared unjudged.

With the installed SGLang's parser (plan.parser: its recorded option table) the whole command line is read as
SGLang's argparse reads it (core/sglang_argv.py), the `--config` file's keys first, as SGLang's
ConfigArgumentMerger puts them. Then: a flag SGLang does not have is KT-E306 (did you mean), a flag kt-launch
generates is KT-E303 (one rule for the command line and the config file, by the parser's dest, so an alias or an
abbreviation is caught too), a value the parser refuses KT-E321, a word no flag takes KT-E320, `-h` KT-E322, a
malformed `--config` KT-E323, an unreadable config file KT-E324, a key SGLang's merger refuses KT-E325; a flag given
twice warns (KT-W320), a deprecated one too (KT-W321). Without a parser only the generated flags are refused (by
their exact spelling) and KT-I320 lists what was not checked. Every finding carries its flag, key and file as fields.
"""

from __future__ import annotations

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.nearest import closest
from kt_launch.core.options import OPTIONS
from kt_launch.core.plan import LaunchPlan
from kt_launch.core.sglang_config import WORD, config_path, suffix_ok
from kt_launch.core.sglang_argv import NEGATIVE, GENERATED, Use, Word, config_words, parse

EXTRA, AFTER, CONFIG = "server.extra_args", "after --", "config"
_EXITS = ("_HelpAction", "_VersionAction")  # argparse actions that print and exit: the server never starts


def _by_flag() -> dict[str, str]:
    return {n: o.key for o in OPTIONS if o.settable for spec in o.render.values() for n in getattr(spec, "names", ())}


def _what(w: Word, flag: str | None = None) -> str:
    if w.origin == CONFIG:
        return f"key {w.key!r} of the SGLang --config file {w.file}"
    shown = (flag or w.text)[:80]
    return f"pass-through argument {shown}" + (" (server.extra_args)" if w.origin == EXTRA else "")


def _fields(w: Word, flag: str | None = None, **more: str | None) -> dict[str, str | None]:
    d: dict[str, str | None] = {"flag": (flag or w.text)[:200], "where": w.origin if w.origin != CONFIG else "--config"}
    if w.origin == CONFIG:
        d.update(key=w.key, file=w.file)
    d.update(more)
    return d


def judge_passthrough(plan: LaunchPlan, generated: list[str], extra: list[str]) -> list[Finding]:
    """Findings about the user's SGLang arguments. `generated`: the flags kt-launch renders (no interpreter);
    `extra`: server.extra_args; plan.passthrough: the words after `--`."""
    words = ([Word(a, GENERATED) for a in generated] + [Word(a, EXTRA) for a in extra]
             + [Word(a, AFTER) for a in plan.passthrough])
    out: list[Finding] = []
    words = _merge_config(plan, words, out)
    if plan.parser is not None:
        out += _judged(plan, words)
    else:
        out += _unjudged(plan, words)
    return out


def _merge_config(plan: LaunchPlan, words: list[Word], out: list[Finding]) -> list[Word]:
    """SGLang's merge: the exact word `--config` and its file leave the command line, the file's keys go in front.
    Its mistakes (two, no file, not YAML, unreadable) are findings."""
    at = [i for i, w in enumerate(words) if w.text == WORD]
    if not at or (plan.parser is not None and WORD not in plan.parser.options):
        return words  # an SGLang without --config: the word is an unknown flag like any other (KT-E306)
    first = words[at[0]]
    if len(at) > 1:
        out.append(error("KT-E323", f"{WORD} is given {len(at)} times; SGLang takes one config file and stops "
                         "('Multiple config files specified')", "merge them into one file",
                         _fields(first, WORD)))
        return words
    path = config_path([w.text for w in words])
    if path is None:
        out.append(error("KT-E323", f"{WORD} ends the arguments: SGLang stops ('No config file specified')",
                         f"give the file: {WORD} FILE.yaml", _fields(first, WORD)))
        return words
    if not suffix_ok(path):
        out.append(error("KT-E323", f"{WORD} {path[:200]}: SGLang reads only .yaml or .yml config files and stops "
                         "on any other", "rename it to end in .yaml", _fields(first, WORD, file=path)))
        return words
    rest = words[:at[0]] + words[at[0] + 2:]
    cfg = plan.sglang_config
    if cfg is None or cfg.path != path:
        return rest
    if not cfg.read:
        out.append(info("KT-I321", f"the SGLang --config file {path} was not read (--no-check): its keys are not "
                        "checked", "plan without --no-check to check them", _fields(first, WORD, file=path)))
        return rest
    if cfg.problem:
        out.append(error("KT-E324", cfg.problem, "fix the file: a flat YAML mapping of SGLang flag names "
                         "(log-level: info) to scalars or lists", _fields(first, WORD, file=path)))
        return rest
    merger = plan.parser.config_merger if plan.parser is not None else None
    if merger is not None and merger.error:
        out.append(error("KT-E325", f"SGLang cannot read {WORD} files in {plan.parser.python}: its config reader "
                         f"{merger.module} does not import ({merger.error[:200]})", "install what it needs "
                         "(PyYAML), or pass the flags themselves after `--`", _fields(first, WORD, file=path)))
    elif merger is not None:
        for key, _ in cfg.entries:
            action = merger.unsupported_keys.get(key.replace("-", "_"))
            if action:
                w = Word(f"--{key}", CONFIG, key, path)
                out.append(error("KT-E325", f"{_what(w)}: SGLang's --config cannot express the flag (an {action}) "
                                 "and stops ('Unsupported config option')", f"pass --{key} after `--` instead",
                                 _fields(w, f"--{key}")))
    return config_words(cfg.entries, merger, path) + rest


def _judged(plan: LaunchPlan, words: list[Word]) -> list[Finding]:
    facts = plan.parser
    parsed = parse(words, facts.options, facts.allow_abbrev is not False)
    made = {u.action.dest: u.option for u in parsed.uses if u.word.origin == GENERATED and u.action is not None}
    by_flag = _by_flag()
    names = sorted(s for s in facts.options if s.startswith("--"))
    out: list[Finding] = []
    seen: dict[str, Use] = {}
    for u in parsed.uses:
        w = u.word
        if w.origin == GENERATED or (w.text == WORD and w.origin != CONFIG and u.action is not None):
            continue  # a `--config` left in place: _merge_config said why
        a = u.action
        if a is None:
            out.append(_unknown(plan, u, names))
            continue
        if a.action in _EXITS:
            out.append(error("KT-E322", f"{_what(w, u.written)}: SGLang prints its {a.dest} text and exits; the "
                             "server would never start", "remove it (`python -m sglang.launch_server --help` shows the "
                             "help)", _fields(w, u.written, option=u.option)))
            continue
        if a.dest in made:
            key = by_flag.get(made[a.dest] or "")
            same = "" if u.written == made[a.dest] else f" ({u.written} is {made[a.dest]} to SGLang's parser)"
            out.append(error("KT-E303", f"{_what(w, u.written)} repeats a flag kt-launch generates{same}; SGLang "
                             "would take whichever comes last", _fix_generated(w, key),
                             _fields(w, u.written, option=made[a.dest], key_to_set=key)))
            continue
        if u.option == WORD:  # the exact `--config FILE` left the line in _merge_config: this form is never read
            out.append(error("KT-E323", f"{_what(w, u.written)}: SGLang reads a config file only from the two "
                             f"words `{WORD} FILE`; here its parser stores the name and never reads the file",
                             f"write {WORD} FILE (two words, in full)" if w.origin != CONFIG else
                             "a --config file cannot name another; merge them", _fields(w, u.written, option=WORD)))
            continue
        if u.problem:
            out.append(error("KT-E321", f"{_what(w, u.written)}: SGLang's parser refuses it ({u.problem}) and stops",
                             f"see `python -m sglang.launch_server --help` for {u.option}",
                             _fields(w, u.written, option=u.option)))
            continue
        if a.deprecated or "deprecat" in a.action.lower():
            out.append(warning("KT-W321", f"{_what(w, u.written)}: {u.option} is deprecated in the installed SGLang "
                               "(it warns and ignores it)", "remove it", _fields(w, u.written, option=u.option)))
        prev = seen.get(a.dest)
        if prev is not None and a.takes_value:
            out.append(warning("KT-W320", f"{_what(w, u.written)} sets {u.option} again ({_what(prev.word, prev.written)}"
                               " set it first); SGLang takes the last", "keep one",
                               _fields(w, u.written, option=u.option)))
        seen[a.dest] = u
    for s in parsed.strays:
        if s.origin == GENERATED:
            continue
        out.append(error("KT-E320", f"{_what(s)}: no flag of the installed SGLang takes this word, so its parser "
                         "stops ('unrecognized arguments')", "give it to the flag it belongs to, or remove it",
                         _fields(s)))
    return out


def _fix_generated(w: Word, key: str | None) -> str:
    where = f"remove {w.key!r} from {w.file}" if w.origin == CONFIG else "remove it from the pass-through arguments"
    return f"use --set {key}=VALUE instead ({where})" if key else where


def _unknown(plan: LaunchPlan, u: Use, names: list[str]) -> Finding:
    w = u.word
    facts = plan.parser
    if u.matches:
        return error("KT-E306", f"{_what(w, u.written)} is an abbreviation of several flags of the installed SGLang "
                     f"({', '.join(u.matches[:6])}); its parser stops", "write the flag in full",
                     _fields(w, u.written, matches=", ".join(u.matches)))
    near = closest(u.written, names)
    if w.origin == CONFIG:
        near = [n[2:] for n in near]
        hint = f"did you mean {' or '.join(near)}?" if near else "keys are SGLang's long flag names without the dashes"
    else:
        hint = f"did you mean {' or '.join(near)}?" if near else ("check the spelling with "
                                                                  "`python -m sglang.launch_server --help`")
    return error("KT-E306", f"{_what(w, u.written)} is not a flag of the installed SGLang ({facts.distribution} "
                 f"{facts.version}); it would stop at startup", f"{hint}; or remove it",
                 _fields(w, u.written, suggestion=", ".join(near) or None))


def _unjudged(plan: LaunchPlan, words: list[Word]) -> list[Finding]:
    """No parser: refuse the generated flags by their exact spelling (the rule of the judged path, without aliases
    or abbreviations), and say which flags went unchecked."""
    made = {w.text.split("=", 1)[0] for w in words if w.origin == GENERATED and w.text.startswith("--")}
    by_flag = _by_flag()
    out: list[Finding] = []
    unchecked: list[Word] = []
    for w in words:
        if w.origin == GENERATED or not w.text.startswith("-") or len(w.text) < 2 or NEGATIVE.match(w.text):
            continue
        if w.origin == CONFIG and w.text != f"--{w.key}":
            continue  # a value of a config key
        flag = w.text.split("=", 1)[0]
        if flag in made:
            key = by_flag.get(flag)
            out.append(error("KT-E303", f"{_what(w, flag)} repeats a flag kt-launch generates; SGLang would take "
                             "whichever comes last", _fix_generated(w, key), _fields(w, flag, option=flag, key_to_set=key)))
        else:
            unchecked.append(w)
    if unchecked:
        flags = [(w.key if w.origin == CONFIG else w.text.split("=", 1)[0])[:80] for w in unchecked]
        files = sorted({w.file for w in unchecked if w.file})
        out.append(info("KT-I320", f"pass-through flags not checked (no SGLang parser was read): "
                        f"{', '.join(flags[:20])}{', ...' if len(flags) > 20 else ''}",
                        "plan where runtime.python has SGLang installed (kt-launch reads its parser), or check them "
                        "with `python -m sglang.launch_server --help`",
                        {"flags": " ".join(flags), "file": ", ".join(files) or None}))
    return out
