"""`did you mean ...?`: the closest names to a misspelt one. One rule for kt-launch's own options (cli.py) and
SGLang's flags after `--` (render/passthrough.py)."""

from __future__ import annotations

from typing import Iterable


def closest(word: str, names: Iterable[str], n: int = 2, cutoff: float = 0.6) -> list[str]:
    """Up to `n` of `names` nearest to `word` (difflib's ratio, at least `cutoff`), best first."""
    import difflib  # only on a miss: start-up stays lean

    return difflib.get_close_matches(word, list(names), n=n, cutoff=cutoff)
