"""Log-line matchers that cost time linear in the output, whatever a line holds (issue 23, item 1).

Why: the supervisor matches its children's output against start-up phases and crash signatures in the loop that
owns deadlines and signals, and Python runs no signal handler inside `re`. A pattern like `a.*b` backtracks
quadratically over a long line without `b` (a 60 kB debug print of `None`s froze --ready-timeout for 46 s).
So every pattern here is an `Rx`, and three rules hold by construction (checked when the pattern is compiled):

1. Bounded input: a pattern only ever sees the first `WINDOW` characters of a line (`window()`); the real error
   lines it looks for are short, and a dump longer than that is no error line.
2. Substring prefilter: each pattern's `needles` (lower-case literals, derived from the pattern itself, so there is
   no second list to keep in step) are found in a whole chunk of output with `bytes.find` (C speed); a pattern runs
   only on a line that holds one of its needles. Output without needles costs a few `find`s per chunk.
3. Linear shape: each top-level alternative either has no repetition at all (cost per start position bounded by
   the pattern's length) or is anchored at the line start (`^`, one start position) with every unbounded repeat
   possessive (`*+`) or inside an atomic group `(?>...)` holding at most one repeat, and no repeat inside another
   (except a `?`). Each piece then scans the window at most once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

try:  # Python 3.11+
    from re import _constants as _c, _parser as _p  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

WINDOW = 4096  # characters of a line any pattern sees


def window(line: str) -> str:
    return line[:WINDOW]


class PatternShapeError(ValueError):
    """A pattern that could backtrack over a line (or has no literal to prefilter on): a bug of kt-launch."""


@dataclass(frozen=True)
class Rx:
    """A regex, and the lower-case substrings one of which every match contains."""

    pattern: re.Pattern[str]
    needles: tuple[str, ...]

    def search(self, line: str, low: str | None = None) -> re.Match[str] | None:
        """Match against the line's window; `low` = the window lower-cased, when the caller has it."""
        w = window(line)
        low = w.lower() if low is None else low
        if not any(n in low for n in self.needles):
            return None
        return self.pattern.search(w)


def rx(pattern: str, flags: int = 0) -> Rx:
    """Compile `pattern`, check its shape (the module docstring's rule 3) and derive its needles."""
    compiled = re.compile(pattern, flags)
    tree = _p.parse(pattern, flags)
    for branch in _branches(list(tree)):
        _check_branch(pattern, branch)
    needles = _needles(list(tree))
    if not needles or any(not n or not n.isascii() for n in needles):
        raise PatternShapeError(f"{pattern!r}: no ASCII literal every match contains (needed to prefilter)")
    # a needle that contains another is implied by it
    short = sorted(set(needles), key=len)
    kept = tuple(n for i, n in enumerate(short) if not any(m in n for m in short[:i]))
    return Rx(compiled, kept)


# -- shape ---------------------------------------------------------------------------------------------

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | ({_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set())
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)


def _branches(seq: list) -> list[list]:
    """The top-level alternatives of a parsed pattern (a lone group around a branch is looked into)."""
    if len(seq) == 1 and seq[0][0] == _c.BRANCH:
        return [list(b) for b in seq[0][1][1]]
    if len(seq) == 1 and seq[0][0] == _c.SUBPATTERN:
        return _branches(list(seq[0][1][3]))
    return [seq]


def _children(op, av) -> list[list]:
    if op == _c.BRANCH:
        return [list(b) for b in av[1]]
    if op == _c.SUBPATTERN:
        return [list(av[3])]
    if op in _REPEATS:
        return [list(av[2])]
    if _ATOMIC is not None and op == _ATOMIC:
        return [list(av)]
    return []


def _repeats(seq: list) -> list[tuple]:
    """Every repeat in `seq`, at any depth: (op, min, max, inside-a-repeat-whose-max-is-above-1)."""
    out = []

    def walk(s: list, nested: bool) -> None:
        for op, av in s:
            if op in _REPEATS:
                out.append((op, av[0], av[1], nested))
                walk(list(av[2]), nested or av[1] > 1)
            else:
                for c in _children(op, av):
                    walk(c, nested)

    walk(seq, False)
    return out


def _check_branch(pattern: str, branch: list) -> None:
    reps = _repeats(branch)
    if not reps:
        return  # literals, classes, anchors: a bounded cost per start position
    if not branch or branch[0] != (_c.AT, _c.AT_BEGINNING):
        raise PatternShapeError(f"{pattern!r}: an alternative with a repeat must be anchored at the line start (^)")
    if any(nested for *_, nested in reps):
        raise PatternShapeError(f"{pattern!r}: a repeat inside a repeat")
    _check_anchored(pattern, branch[1:])


def _check_anchored(pattern: str, elems: list) -> None:
    possessive = getattr(_c, "POSSESSIVE_REPEAT", None)
    for op, av in elems:
        if _ATOMIC is not None and op == _ATOMIC:
            if len([r for r in _repeats(list(av)) if r[2] > 1]) > 1:
                raise PatternShapeError(f"{pattern!r}: an atomic group with more than one repeat")
        elif op in (_c.BRANCH, _c.SUBPATTERN):  # the parser hoists a common prefix: look into each alternative
            for child in _children(op, av):
                _check_anchored(pattern, child)
        elif any(hi > 1 and r_op != possessive for r_op, _lo, hi, _n in _repeats([(op, av)])):
            raise PatternShapeError(f"{pattern!r}: an unbounded repeat outside an atomic group must be possessive "
                                    "(*+, ++)")


# -- needles -------------------------------------------------------------------------------------------

def _needles(seq: list) -> tuple[str, ...] | None:
    """A set of lower-case literals one of which every match of `seq` contains (None: none known)."""
    options: list[tuple[str, ...]] = []
    run = ""
    for op, av in seq:
        if op == _c.LITERAL:
            run += chr(av).lower()
            continue
        if run:
            options.append((run,))
            run = ""
        if op == _c.AT:
            continue  # zero-width: a literal run across \b is still contiguous text
        if op == _c.BRANCH:
            parts = [_needles(list(b)) for b in av[1]]
            if all(parts):
                options.append(tuple(n for p in parts for n in p))  # type: ignore[union-attr]
        elif op == _c.SUBPATTERN or (_ATOMIC is not None and op == _ATOMIC):
            inner = _needles(_children(op, av)[0])
            if inner:
                options.append(inner)
        elif op in _REPEATS and av[0] >= 1:
            inner = _needles(list(av[2]))
            if inner:
                options.append(inner)
    if run:
        options.append((run,))
    if not options:
        return None
    return max(options, key=lambda ns: (min(len(n) for n in ns), -len(ns)))


# -- scanning a chunk of output ------------------------------------------------------------------------

def needle_index(rxs) -> dict[bytes, list[int]]:
    """needle bytes -> the indices (into `rxs`) of the patterns that need it. A needle that contains another
    is folded into the shorter one (a line holding it holds the shorter one too): fewer passes over the output."""
    wanted: dict[bytes, set[int]] = {}
    for i, r in enumerate(rxs):
        for n in r.needles:
            wanted.setdefault(n.encode("ascii"), set()).add(i)
    out: dict[bytes, list[int]] = {}
    by_length = sorted(wanted, key=len)
    for j, n in enumerate(by_length):
        host = next((m for m in by_length[:j] if m in n), n)
        out.setdefault(host, [])
        out[host] = sorted(set(out[host]) | wanted[n])
    return out


def lowered(data: bytes) -> tuple[bytes, bytes]:
    """(data with \\r as \\n, the same lower-cased): the line ends and the text the needles are found in."""
    if b"\r" in data:
        data = data.replace(b"\r", b"\n")
    return data, data.lower()


def candidate_lines(data: bytes, low: bytes, index: dict[bytes, list[int]], start: int = 0
                    ) -> list[tuple[str, set[int]]]:
    """The lines of data[start:] (from `lowered`) that hold a needle, in order: (the line's window, decoded; the
    indices of the patterns worth running on it). Cost: one `find` pass per needle, one hit per needle and line."""
    lines: dict[int, tuple[int, set[int]]] = {}
    for needle, which in index.items():
        i = low.find(needle, start)
        while i >= 0:
            s = low.rfind(b"\n", start, i) + 1 or start
            e = low.find(b"\n", i)
            e = len(low) if e < 0 else e
            if s in lines:
                lines[s][1].update(which)
            else:
                lines[s] = (e, set(which))
            i = low.find(needle, e)
    return [(line_window(data, s, lines[s][0]), lines[s][1]) for s in sorted(lines)]


def line_window(data: bytes, s: int, e: int) -> str:
    # at most 4 bytes a character: decode that much, then cut to WINDOW characters
    return window(data[s:min(e, s + 4 * WINDOW)].decode("utf-8", "replace"))


def first_line(r: Rx, data: bytes, skip: bytes = b"") -> str | None:
    """The window of the first line of `data` (from `lowered`) that `r` matches, lines holding `skip` aside; one
    pass of the pattern compiled for bytes over the whole text (linear by the same rules), each hit confirmed."""
    bulk = _bulk(r)
    pos = 0
    while True:
        m = bulk.search(data, pos)
        if m is None:
            return None
        s = data.rfind(b"\n", 0, m.start()) + 1
        e = data.find(b"\n", m.end())
        e = len(data) if e < 0 else e
        line = line_window(data, s, e)
        if not (skip and skip in data[s:e]) and r.search(line):
            return line
        pos = e + 1


_BULK: dict[Rx, re.Pattern[bytes]] = {}


def _bulk(r: Rx) -> re.Pattern[bytes]:
    if r not in _BULK:
        _BULK[r] = re.compile(r.pattern.pattern.encode("ascii"), (r.pattern.flags & re.I) | re.M)
    return _BULK[r]
