"""Read SGLang's own `--config FILE` (named after `--` or in server.extra_args) so its keys can be judged like the
flags on the command line (render/passthrough.py). Through the bounded reader: a FIFO, device or directory is
refused without blocking, a huge or deeply nested file or a duplicate key is refused by name.

The format (core/sglang_config.py): a mapping at the top, string keys, each value a scalar or a list of scalars.
Anything else is a problem that names the file and the key; SGLang itself would stop on it, or pass a Python repr.
"""

from __future__ import annotations

from typing import Any, Sequence

from kt_launch.core.sglang_config import SglangConfigFile, config_path, suffix_ok
from kt_launch.facts.reader import Kind, ReadError, read_yaml

SGLANG_CONFIG = Kind("SGLang --config file", 1 << 20, 8)
_SCALARS = (str, int, float, bool, type(None))


def read_sglang_config(args: Sequence[str], checks: bool = True) -> SglangConfigFile | None:
    """The `--config FILE` among SGLang's arguments, read; None when there is none (or no file after it, or a
    suffix SGLang refuses: render says so from the words alone). Under --no-check it is not read."""
    path = config_path(list(args))
    if path is None or not suffix_ok(path):
        return None
    if not checks:
        return SglangConfigFile(path, read=False)
    try:
        doc = read_yaml(path, SGLANG_CONFIG)
    except ReadError as e:
        return SglangConfigFile(path, problem=str(e))
    problem = _shape_problem(path, doc)
    if problem:
        return SglangConfigFile(path, problem=problem)
    return SglangConfigFile(path, tuple((doc or {}).items()))


def _shape_problem(path: str, doc: Any) -> str | None:
    what = f"{SGLANG_CONFIG.what} {path}"
    if doc is None:
        return None  # an empty file: SGLang reads it as no keys
    if not isinstance(doc, dict):
        return f"{what}: holds a {_kind(doc)} at the top; SGLang's --config needs a mapping of flag names to values"
    for key, value in doc.items():
        if not isinstance(key, str):
            return f"{what}: key {key!r} is a {_kind(key)}; keys are flag names (e.g. log-level)"
        if isinstance(value, list):
            bad = next((v for v in value if not isinstance(v, _SCALARS)), None)
            if bad is not None:
                return (f"{what}: key {key[:80]!r} holds a list with a {_kind(bad)} in it; SGLang's --config takes "
                        "scalars or lists of scalars")
        elif not isinstance(value, _SCALARS):
            return (f"{what}: key {key[:80]!r} holds a {_kind(value)}; SGLang's --config takes scalars or lists of "
                    "scalars (give a JSON value as a quoted string)")
    return None


def _kind(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(v), type(v).__name__)
