"""SGLang's own `--config FILE` (a flat YAML of long flag names): the file as kt-launch read it, and how the
installed SGLang turns its keys into flags. Plain values; facts/sglang_config.py reads the file,
facts/sglang_worker.py asks SGLang's ConfigArgumentMerger, render/passthrough.py judges the keys.

What SGLang does with it (sglang-kt 0.7.2 `sglang/srt/server_args_config_parser.py`, sglang 0.5.23
`sglang/srt/utils/server_args_config_parser.py`, both called from `prepare_server_args` when the argv holds the
exact word `--config`): only `.yaml`/`.yml`; one file; each key becomes `--KEY` verbatim (so keys are the hyphenated
flag names, an abbreviation works as on the command line); a switch's `true` adds the flag and `false` drops it,
another boolean becomes `--KEY true|false`, a list `--KEY a b`, a scalar `--KEY str(value)`; the flags so made go
*before* the command line's, so a later flag of the same name wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

SUFFIXES = (".yaml", ".yml")  # SGLang refuses any other (Path(file).suffix.lower())
WORD = "--config"  # SGLang looks for exactly this word in its argv; `--config=FILE` is never read


def suffix_ok(path: str) -> bool:
    """SGLang's test: the last suffix of the file name, lower-cased, is .yaml or .yml (a pure string test)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return 0 < dot < len(name) - 1 and name[dot:].lower() in SUFFIXES


def config_path(args: list[str] | tuple[str, ...]) -> str | None:
    """The file SGLang would read: the word after the first `--config`, None when there is none."""
    for i, a in enumerate(args):
        if a == WORD:
            return args[i + 1] if i + 1 < len(args) else None
    return None


@dataclass(frozen=True)
class SglangConfigFile:
    """The `--config FILE` of a plan's SGLang arguments as kt-launch read it. `problem` set: it could not be read
    (the message names the file), `entries` is empty; `read` False: not read at all (--no-check)."""

    path: str
    entries: tuple[tuple[str, Any], ...] = field(default=(), hash=False)  # (key, value) in file order
    problem: str | None = None
    read: bool = True


@dataclass(frozen=True)
class ConfigMerger:
    """How the installed SGLang turns config keys into flags (its ConfigArgumentMerger, asked by the worker):
    keys it treats as switches and keys it refuses (an argparse action it cannot express). `error` set: SGLang's
    config reader does not even import in that interpreter (SGLang would stop on any `--config`)."""

    module: str | None = None
    store_true_keys: frozenset[str] = frozenset()
    unsupported_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    error: str | None = None

    @classmethod
    def from_json(cls, d: Any) -> ConfigMerger | None:
        if not isinstance(d, dict):
            return None
        unsupported = d.get("unsupported_keys") or {}
        return cls(module=d.get("module"), store_true_keys=frozenset(d.get("store_true_keys") or ()),
                   unsupported_keys=MappingProxyType({str(k): str(v) for k, v in unsupported.items()}),
                   error=d.get("error"))
