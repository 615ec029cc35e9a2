"""The one bounded reader for every JSON and YAML file kt-launch reads.

Profiles, `extends:` parents, config.json, adapter configs, index files, host facts and caches all
come through here, so each guarantee holds everywhere: regular files only (a FIFO, device or
directory is refused by name before it is opened for reading, so nothing blocks), a size cap per
kind, a nesting cap, duplicate keys refused, YAML 1.2-style scalars (`0x30`, `4_8`, `0o7` and
`yes` stay strings) and no object construction. Every failure is a `ReadError` whose fields say which file,
what kind of file, what is wrong and where (its message is built from them); callers turn it into their own
finding or an exit-2 message from those fields, never by cutting up the message.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import yaml


class ReadError(ValueError):
    """A file could not be read as the kind it should be. Fields: `what` (how messages name the file's kind:
    "profile", "config.json"), `file` (its path), `reason` (what is wrong, a phrase that names no file) and `line`
    (1-based, where known). The message is `"{what} {file}: {reason}"`."""

    def __init__(self, what: str, file: str | os.PathLike, reason: str, line: int | None = None):
        self.what, self.file, self.reason, self.line = what, os.fspath(file), reason, line
        super().__init__(f"{what} {self.file}: {reason}")

    def __reduce__(self):  # pickles (a worker's answer, a process pool) with its fields
        return (type(self), (self.what, self.file, self.reason, self.line))


class Missing(ReadError):
    """The file does not exist (callers for which absence is normal, like caches, tell it apart)."""


@dataclass(frozen=True)
class Kind:
    what: str  # how messages name the file: "profile", "config.json", "--host-facts", "cache"
    max_bytes: int
    max_depth: int = 64
    follow: bool = True  # False (caches): a symbolic link is refused, never followed (O_NOFOLLOW)


PROFILE = Kind("profile", 1 << 20, 32)
MODEL_CONFIG = Kind("config.json", 4 << 20, 32)
ADAPTER_CONFIG = Kind("adapter_config.json", 1 << 20, 32)
TOKENIZER_CONFIG = Kind("tokenizer_config.json", 32 << 20, 32)  # added_tokens_decoder makes some 10+ MiB
INDEX = Kind("safetensors index", 64 << 20, 8)
HOST_FACTS = Kind("host facts", 4 << 20, 16)
MODEL_FACTS = Kind("model facts", 8 << 20, 40)  # config.json (up to 4 MiB) inside `doctor --model DIR --json`
CACHE = Kind("cache file", 64 << 20, 32, follow=False)
SAFETENSORS_HEADER_CAP = 100 * 1024 * 1024  # safetensors itself refuses larger headers
SAFETENSORS_HEADER = Kind("safetensors header", SAFETENSORS_HEADER_CAP, 8)  # {name: {dtype, shape, data_offsets}}
RECORDED_FACTS = Kind("recorded SGLang facts", 64 << 20, 32)  # a saved worker answer (tests/data/parser_*.json)

MAX_YAML_NODES = 10_000  # after expanding aliases: a "billion laughs" alias bomb is refused, not expanded (a profile
# is a few hundred values, a 256-host fleet a few thousand; more only costs every later step time)


def read_bytes(path: str | os.PathLike, kind: Kind) -> bytes:
    """The bytes of a regular file of at most kind.max_bytes. Special files are refused without blocking."""
    p = os.fspath(path)
    try:
        st = os.stat(p) if kind.follow else os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        raise Missing(kind.what, p, "no such file") from None
    except OSError as e:
        raise ReadError(kind.what, p, f"cannot read ({e.strerror or e})") from None
    if stat.S_ISLNK(st.st_mode):
        raise ReadError(kind.what, p, "is a symbolic link, which kt-launch does not follow here; remove it")
    if stat.S_ISDIR(st.st_mode):
        raise ReadError(kind.what, p, "is a directory; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise ReadError(kind.what, p, "not a regular file (a FIFO, socket or device); give a file")
    if st.st_size > kind.max_bytes:
        raise ReadError(kind.what, p, f"{st.st_size} bytes, more than the {kind.max_bytes} a {kind.what} may have")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | (0 if kind.follow else getattr(os, "O_NOFOLLOW", 0)))
    except OSError as e:
        raise ReadError(kind.what, p, f"cannot read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
            raise ReadError(kind.what, p, "not a regular file; give a file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(kind.max_bytes + 1)
    except OSError as e:
        raise ReadError(kind.what, p, f"cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > kind.max_bytes:
        raise ReadError(kind.what, p, f"more than the {kind.max_bytes} bytes a {kind.what} may have")
    return data


def _text(path: str, data: bytes, kind: Kind) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReadError(kind.what, path, f"not UTF-8 (byte {e.start}); save it as UTF-8") from None


def _depth_ok(node: Any, limit: int) -> bool:
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > limit:
            return False
        if isinstance(n, dict):
            stack.extend((v, d + 1) for v in n.values())
        elif isinstance(n, list):
            stack.extend((v, d + 1) for v in n)
    return True


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


class _Duplicate(Exception):
    pass


_NESTING = re.compile(rb"[\[{]")


def parse_json(path: str | os.PathLike, data: bytes, kind: Kind) -> Any:
    p = os.fspath(path)
    text = _text(p, data, kind)
    # Cheap pre-check: json's recursive parser would hit RecursionError long before our depth limit matters
    # on hostile input; count brackets only when there could be that many.
    if len(_NESTING.findall(data[: 4 * kind.max_depth * 64])) > kind.max_depth and not _shallow_prefix(text, kind):
        raise ReadError(kind.what, p, f"nested deeper than {kind.max_depth} levels")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except _Duplicate as e:
        raise ReadError(kind.what, p, f"key {str(e)[:80]!r} appears twice; keep one") from None
    except RecursionError:
        raise ReadError(kind.what, p, f"nested deeper than {kind.max_depth} levels") from None
    except ValueError as e:
        raise ReadError(kind.what, p, f"not valid JSON ({str(e)[:160]})", getattr(e, "lineno", None)) from None
    if not _depth_ok(doc, kind.max_depth):
        raise ReadError(kind.what, p, f"nested deeper than {kind.max_depth} levels")
    bad = _bad_number(doc) if _MAYBE_OUT_OF_RANGE.search(text) else None  # the walk only where text could hold one
    if bad is not None:
        field, value = bad
        raise ReadError(kind.what, p, f"{field or 'the document'}: {_number_text(value)}; {NUMBER_RULE}")
    return doc


def _shallow_prefix(text: str, kind: Kind) -> bool:
    """True when no point of the document's opening part is nested deeper than the limit."""
    depth = 0
    in_str = esc = False
    for ch in text[: 4 * kind.max_depth * 64]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > kind.max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


# Numbers every file may hold: finite, and integers within a signed 64-bit integer (what every consumer, C++
# kt-kernel, torch, a port or a byte count, can hold). A 400-digit `lora_alpha` or `1e400` is refused here,
# naming the file and the field, instead of overflowing wherever it is first converted.
MAX_INT = (1 << 63) - 1
NUMBER_RULE = "numbers must be finite and within ±(2**63 - 1)"
# Text that may spell such a number (19+ digits, an exponent of 3+ digits, NaN, Infinity): a file without any (every
# safetensors header, nearly every config) is not walked again.
_MAYBE_OUT_OF_RANGE = re.compile(r"[0-9]{19}|[eE][+]?[0-9]{3}|NaN|Infinity")


def _constant(name: str) -> float:
    """NaN, Infinity, -Infinity: read, then refused by _bad_number with the field that holds them."""
    return float(name)


def number_ok(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -MAX_INT <= v <= MAX_INT
    if isinstance(v, float):
        return math.isfinite(v)
    return True


def _bad_number(doc: Any) -> tuple[str, Any] | None:
    """(the field, as `a.b[2]`, and its value) of the first number number_ok refuses, or None."""
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        n, path = stack.pop()
        if isinstance(n, dict):
            stack.extend((v, (path, k)) for k, v in reversed(list(n.items())))
        elif isinstance(n, list):
            stack.extend((v, (path, i)) for i, v in reversed(list(enumerate(n))))
        elif not number_ok(n):
            return _field(path), n
    return None


def _field(path: tuple) -> str:
    parts = []
    while path:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:80]}")
    return "".join(reversed(parts)).lstrip(".")


def _number_text(v: Any) -> str:
    if isinstance(v, float):
        what = "NaN" if math.isnan(v) else "infinite"
        return f"{v!r} is {what}, out of range for a number" if what != "NaN" else "NaN is not a number"
    digits = len(str(abs(v)))
    return f"an integer of {digits} digits ({str(v)[:12]}...) is out of range for a number"


def read_json(path: str | os.PathLike, kind: Kind) -> Any:
    return parse_json(path, read_bytes(path, kind), kind)


# -- YAML ---------------------------------------------------------------------------------------

_FAST = getattr(yaml, "CSafeLoader", None)
# YAML 1.2 core schema scalars: decimal ints only; floats without underscores or sexagesimal; true/false only.
_INT_12 = re.compile(r"^[-+]?[0-9]+$")
_FLOAT_12 = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_12 = re.compile(r"^(?:~|null|Null|NULL|)$")


def _core_schema(base: type) -> type:
    """A safe loader class with YAML 1.2 scalar resolution and guards for aliases, depth and duplicate keys."""

    class Loader(base):  # type: ignore[misc, valid-type]
        yaml_implicit_resolvers: dict = {}

        def construct_document(self, node):
            self._guard(node)
            return super().construct_document(node)

        def _guard(self, root) -> None:
            sizes: dict[int, int] = {}
            active: set[int] = set()
            stack = [(root, 1, False, "")]
            while stack:
                n, depth, done, field = stack.pop()
                key = id(n)
                if done:
                    active.discard(key)
                    total = 1 + sum(sizes[id(c)] for c in _children(n))
                    if total > MAX_YAML_NODES:
                        raise _YamlRefused(f"its anchors and aliases expand to more than {MAX_YAML_NODES} values")
                    sizes[key] = total
                    continue
                if key in sizes:
                    continue
                if key in active:
                    raise _YamlRefused("an alias refers to the node that contains it")
                if depth > self.max_depth:
                    raise _YamlRefused(f"nested deeper than {self.max_depth} levels")
                if isinstance(n, yaml.ScalarNode):
                    _number_guard(n, field)
                if isinstance(n, yaml.MappingNode):
                    seen = set()
                    for k, _ in n.value:
                        if isinstance(k, yaml.ScalarNode):
                            if k.value in seen:
                                raise _YamlRefused(f"key {k.value[:80]!r} appears twice in one mapping (line "
                                                   f"{k.start_mark.line + 1}); keep one")
                            seen.add(k.value)
                active.add(key)
                stack.append((n, depth, True, field))
                stack.extend((c, depth + 1, False, f) for c, f in _children_fields(n, field))

    Loader.max_depth = 32
    for tag, regexp, first in (
        ("tag:yaml.org,2002:bool", _BOOL_12, "tTfF"),
        ("tag:yaml.org,2002:int", _INT_12, "-+0123456789"),
        ("tag:yaml.org,2002:float", _FLOAT_12, "-+0123456789."),
        ("tag:yaml.org,2002:null", _NULL_12, ["~", "n", "N", ""]),
    ):
        Loader.add_implicit_resolver(tag, regexp, list(first))
    return Loader


def _children_fields(n, field: str) -> list:
    """(child node, the field it is: `server.port`, `fleet.hosts[1]`, for messages)."""
    if isinstance(n, yaml.SequenceNode):
        return [(c, f"{field}[{i}]") for i, c in enumerate(n.value)]
    if isinstance(n, yaml.MappingNode):
        out = []
        for k, v in n.value:
            name = k.value[:80] if isinstance(k, yaml.ScalarNode) else "?"
            out += [(k, field), (v, f"{field}.{name}" if field else name)]
        return out
    return []


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


def _number_guard(n, field: str) -> None:
    """A YAML number number_ok refuses (`.inf`, `.nan`, `1e400`, 400 digits), by field and line."""
    text = n.value.strip()
    if n.tag == _INT_TAG:
        digits = text.lstrip("+-")
        ok = len(digits) <= 19 and number_ok(int(text)) if digits.isdigit() else True
    elif n.tag == _FLOAT_TAG:
        try:
            ok = number_ok(float(text.replace(".inf", "inf").replace(".Inf", "inf").replace(".INF", "inf")
                                 .replace(".nan", "nan").replace(".NaN", "nan").replace(".NAN", "nan")))
        except ValueError:
            ok = True  # not a number PyYAML reads either; its constructor says so
    else:
        return
    if not ok:
        raise _YamlRefused(f"{field or 'the document'} (line {n.start_mark.line + 1}): {text[:24]}"
                           f"{'...' if len(text) > 24 else ''} is out of range; {NUMBER_RULE}")


def _children(n) -> list:
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    if isinstance(n, yaml.MappingNode):
        return [c for kv in n.value for c in kv]
    return []


class _YamlRefused(Exception):
    pass


_LOADERS = [_core_schema(c) for c in (_FAST, yaml.SafeLoader) if c is not None]


def parse_yaml(path: str | os.PathLike, data: bytes, kind: Kind) -> Any:
    p = os.fspath(path)
    text = _text(p, data, kind)
    last: Exception | None = None
    for loader in _LOADERS:  # libyaml first; PyYAML's own SafeLoader (the reference) where libyaml refuses
        loader.max_depth = kind.max_depth
        try:
            return yaml.load(text, Loader=loader)
        except _YamlRefused as e:
            raise ReadError(kind.what, p, f"refused: {e}") from None
        except RecursionError:
            raise ReadError(kind.what, p, f"nested deeper than {kind.max_depth} levels") from None
        except yaml.YAMLError as e:
            last = e
        except (ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
            # PyYAML's constructors raise these for odd explicit tags (`!!bool maybe`, `!!int x`) and huge integers
            raise ReadError(kind.what, p, f"invalid value ({e.__class__.__name__}: {str(e)[:160]}); check explicit "
                            "!!tags and very long numbers") from None
    mark = getattr(last, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(last, "problem", None) or last.__class__.__name__
    raise ReadError(kind.what, p, f"invalid YAML{where}: {problem}", mark.line + 1 if mark else None)


def read_yaml(path: str | os.PathLike, kind: Kind) -> Any:
    return parse_yaml(path, read_bytes(path, kind), kind)
