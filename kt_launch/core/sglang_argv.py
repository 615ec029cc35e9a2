"""SGLang's command line read the way its own argparse parser reads it, from the parser's recorded option table.

Pure: the table is `SglangFacts.options` (every option string -> its argparse action's fields, read by
facts/sglang_worker.py from the installed SGLang). `parse()` follows CPython 3.11's argparse (`_parse_optional`,
`_get_option_tuples`, `consume_optional`, `_get_values`): exact option strings first, then `--flag=value`, then
unique prefixes when the parser allows abbreviations (`sglang.launch_server` builds a plain
`argparse.ArgumentParser()`, so it does), an ambiguous prefix refused; a word with a space or a negative number is
a value; a value-taking flag takes the next words that are not flags, as many as its nargs says; `--` ends the flags.
Nothing is guessed from help text. tests/contract checks the verdicts against the real parsers.

`config_words()` is SGLang's ConfigArgumentMerger: a `--config` file's keys turned into the words SGLang puts in
front of its command line (core/sglang_config.py says how).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kt_launch.core.sglang import OptionInfo
from kt_launch.core.sglang_config import ConfigMerger

GENERATED = "generated"  # a word kt-launch renders from the plan
NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's _negative_number_matcher


@dataclass(frozen=True)
class Word:
    """One argv item and where it came from: GENERATED, "server.extra_args", "after --", or a --config file's key."""

    text: str
    origin: str
    key: str | None = None  # the --config key that made this word
    file: str | None = None  # the --config file


@dataclass
class Use:
    """One flag as the parser takes it: the word, the action it names (None: no such flag), its values, and what
    the parser would refuse about it (argparse's own wording)."""

    word: Word
    written: str  # the option as written, before any `=`
    action: OptionInfo | None
    option: str | None = None  # the option string it resolved to (an abbreviation's full name)
    values: list[Word] = field(default_factory=list)
    explicit: str | None = None  # the `=value` part
    matches: tuple[str, ...] = ()  # an ambiguous abbreviation: every option string it could be
    problem: str | None = None


@dataclass
class Parsed:
    uses: list[Use]
    strays: list[Word]  # words no flag takes (argparse: "unrecognized arguments")


def _tuples(arg: str, table: Mapping[str, OptionInfo], abbrev: bool) -> list[tuple[OptionInfo, str, str | None]]:
    out = []
    if arg[1] == "-":
        if abbrev:
            prefix, eq, explicit = arg.partition("=")
            for s, a in table.items():
                if s.startswith(prefix):
                    out.append((a, s, explicit if eq else None))
    else:  # one dash: `-x`, `-xVALUE`
        short, short_explicit = arg[:2], arg[2:]
        for s, a in table.items():
            if s == short:
                out.append((a, s, short_explicit))
            elif s.startswith(arg):
                out.append((a, s, None))
    return out


def _classify(arg: str, table: Mapping[str, OptionInfo], abbrev: bool, negatives: bool):
    """None: a value word; else (action or None, option string, explicit value, ambiguous matches)."""
    if not arg or arg[0] != "-":
        return None
    if arg in table:
        return table[arg], arg, None, ()
    if len(arg) == 1:
        return None
    if "=" in arg:
        opt, explicit = arg.split("=", 1)
        if opt in table:
            return table[opt], opt, explicit, ()
    found = _tuples(arg, table, abbrev)
    if len(found) > 1:
        return None, arg.split("=", 1)[0], None, tuple(s for _, s, _ in found)
    if len(found) == 1:
        a, s, explicit = found[0]
        return a, s, explicit, ()
    if NEGATIVE.match(arg) and not negatives:
        return None
    if " " in arg:
        return None
    return None, arg, None, ()


def _count(nargs: Any, available: int) -> tuple[int, str | None]:
    """How many of `available` following value words a flag with `nargs` takes, or argparse's complaint."""
    if nargs is None:
        return (1, None) if available >= 1 else (0, "expected one argument")
    if nargs == "?":
        return min(available, 1), None
    if nargs == "*":
        return available, None
    if nargs == "+":
        return (available, None) if available >= 1 else (0, "expected at least one argument")
    if isinstance(nargs, int):
        if available >= nargs:
            return nargs, None
        return 0, f"expected {nargs} argument{'s' if nargs != 1 else ''}" if nargs else None
    return available, None  # REMAINDER / PARSER: not in SGLang's parser; take the rest


def _value_problem(action: OptionInfo, text: str) -> str | None:
    """argparse's type conversion and choices check, for the types and choices the table records as plain data."""
    value: Any = text
    if action.type == "int":
        try:
            value = int(text)
        except ValueError:
            return f"invalid int value: {text[:80]!r}"
    elif action.type == "float":
        try:
            value = float(text)
        except ValueError:
            return f"invalid float value: {text[:80]!r}"
    elif action.type not in (None, "str"):
        return None  # a callable of SGLang's own: not judged here
    choices = action.choices
    if choices and all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:12]) + (", ..." if len(choices) > 12 else "")
            return f"invalid choice: {text[:80]!r} (choose from {shown})"
    return None


def parse(words: Sequence[Word], table: Mapping[str, OptionInfo], allow_abbrev: bool = True) -> Parsed:
    """Every flag of `words` as SGLang's parser takes it (argparse 3.11), and the words no flag takes."""
    negatives = any(NEGATIVE.match(s) for s in table)
    kinds: list[Any] = []
    ended = False
    for w in words:
        if ended:
            kinds.append(None)
        elif w.text == "--":
            ended = True
            kinds.append("--")
        else:
            kinds.append(_classify(w.text, table, allow_abbrev, negatives))
    uses: list[Use] = []
    strays: list[Word] = []
    i = 0
    while i < len(words):
        k = kinds[i]
        if k is None or k == "--":
            strays.append(words[i])
            i += 1
            continue
        action, option, explicit, matches = k
        text = words[i].text
        written = text.split("=", 1)[0] if text.startswith("--") else text
        use = Use(words[i], written, action, option if action else None, explicit=explicit, matches=matches)
        uses.append(use)
        i += 1
        if action is None:  # unknown or ambiguous: argparse sets it and the value words after it aside
            while i < len(words) and kinds[i] is None:
                use.values.append(words[i])  # most likely its value: judged with it, not as strays of their own
                i += 1
            continue
        if explicit is not None:
            if action.nargs == 0 or (isinstance(action.nargs, int) and action.nargs > 1):
                use.problem = (f"ignored explicit argument {explicit[:80]!r}" if action.nargs == 0 else
                               f"expected {action.nargs} arguments")
            else:
                use.values = [Word(explicit, words[i - 1].origin, words[i - 1].key, words[i - 1].file)]
        else:
            available = 0
            while i + available < len(words) and kinds[i + available] is None:
                available += 1  # a `--` (kind "--") stops it: no flag takes a value past it
            n, problem = _count(action.nargs, available)
            use.problem = problem
            use.values = list(words[i:i + n])
            i += n
        if use.problem is None:
            checked = [v.text for v in use.values]
            if "--" in checked:  # argparse's _get_values drops the first `--` (only `--flag=--` gets one here)
                checked.remove("--")
            for v in checked:
                use.problem = _value_problem(action, v)
                if use.problem:
                    break
    return Parsed(uses, strays)


def config_words(entries: Sequence[tuple[str, Any]], merger: ConfigMerger | None, file: str) -> list[Word]:
    """The words SGLang's ConfigArgumentMerger makes of a --config file's (key, value) pairs, in order. A boolean
    is a switch when the merger says the key is one (true: the flag, false: nothing), else `--KEY true|false`."""
    switches = merger.store_true_keys if merger is not None else frozenset()
    out: list[Word] = []
    for key, value in entries:
        flag = Word(f"--{key}", "config", key, file)
        if isinstance(value, bool):
            if key.replace("-", "_") in switches:
                out += [flag] if value else []
            else:
                out += [flag, Word(str(value).lower(), "config", key, file)]
        elif isinstance(value, list):
            out += [flag, *(Word(str(v), "config", key, file) for v in value)] if value else []
        else:
            out += [flag, Word(str(value), "config", key, file)]
    return out
