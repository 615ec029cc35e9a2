"""Identify a file by its content, never by its name, reading only magic bytes and headers.

Kinds: safetensors, torch-zip (torch.save archive: a zip holding `data.pkl`), zip, pickle (raw pickle,
also the legacy torch.save format), gguf, json, text, unknown, directory, empty, special, unreadable,
symlink-loop, missing. A file that looks like safetensors (8-byte little-endian header length, then `{`)
but is broken gets kind "safetensors" with `problem` set. Tensor data and pickles are never read:
zip archives are only listed, pickles only recognised by their protocol byte.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

HEADER_CAP = 100 * 1024 * 1024  # safetensors itself refuses larger headers

DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

# Problems of a safetensors-shaped file (FileId.problem).
TOO_SMALL = "too-small"            # fewer than 8 bytes
HEADER_TOO_LARGE = "header-too-large"
HEADER_BEYOND_FILE = "header-beyond-file"  # header length points past the end of the file
HEADER_INVALID = "header-invalid"  # not UTF-8 JSON object / bad entries (e.g. cut off)
DATA_BEYOND_FILE = "data-beyond-file"      # a tensor's data_offsets end past the end of the file
TRUNCATED = (HEADER_BEYOND_FILE, DATA_BEYOND_FILE)


class Tensor(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def tensor_nbytes(dtype: str, shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return int(n * DTYPE_BYTES.get(dtype, 1))


@dataclass(frozen=True)
class FileId:
    path: str
    kind: str
    size: int = 0
    problem: str | None = None  # set when the file is not usable as its kind
    detail: str = ""  # one human line: what it is, or why it is broken
    header: bytes = field(default=b"", compare=False, repr=False)  # raw safetensors JSON header
    ntensors: int = 0

    @property
    def ok_safetensors(self) -> bool:
        return self.kind == "safetensors" and self.problem is None

    @property
    def is_torch(self) -> bool:
        return self.kind in ("torch-zip", "pickle")

    @property
    def data_bytes(self) -> int:
        return max(0, self.size - 8 - len(self.header)) if self.ok_safetensors else 0

    @cached_property
    def tensors(self) -> dict[str, Tensor]:
        """Every tensor of a valid safetensors header (parses the whole JSON: use on small files)."""
        if not self.ok_safetensors:
            return {}
        out = {}
        for name, ent in json.loads(self.header).items():
            if name != "__metadata__":
                out[name] = Tensor(ent["dtype"], tuple(ent["shape"]), tensor_nbytes(ent["dtype"], ent["shape"]))
        return out

    def describe(self) -> str:
        names = {
            "safetensors": "a safetensors file", "torch-zip": "a torch.save zip archive (pickle inside)",
            "pickle": "a raw pickle (legacy torch.save format)", "gguf": "a GGUF file", "zip": "a zip archive",
            "json": "a JSON text file", "text": "a text file", "unknown": "of unknown content",
            "directory": "a directory", "empty": "an empty file", "special": "not a regular file",
            "unreadable": "not readable", "symlink-loop": "a symlink loop", "missing": "missing",
        }
        return names.get(self.kind, self.kind)


def _stat(path: str) -> tuple[os.stat_result | None, FileId | None]:
    try:
        return os.stat(path), None
    except FileNotFoundError:
        if os.path.islink(path):
            return None, FileId(path, "missing", detail=f"dangling symlink to {os.readlink(path)}")
        return None, FileId(path, "missing", detail="does not exist")
    except NotADirectoryError:
        return None, FileId(path, "missing", detail="a parent is not a directory")
    except PermissionError as e:
        return None, FileId(path, "unreadable", detail=f"cannot stat ({e.strerror})")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None, FileId(path, "symlink-loop", detail="too many levels of symbolic links")
        return None, FileId(path, "unreadable", detail=f"cannot stat ({e.strerror or e})")


def _open(path: str):
    """Indirection so tests can simulate an unreadable file even when running as root."""
    return open(path, "rb")


def identify(path: str | os.PathLike, keep_tensors: bool = True) -> FileId:
    """What `path` is, by content. Never raises for file-system problems."""
    path = os.fspath(path)
    st, bad = _stat(path)
    if bad is not None:
        return bad
    if stat.S_ISDIR(st.st_mode):
        return FileId(path, "directory")
    if not stat.S_ISREG(st.st_mode):
        return FileId(path, "special", detail="not a regular file (device, FIFO or socket)")
    size = st.st_size
    if size == 0:
        return FileId(path, "empty", 0, detail="0 bytes")
    try:
        with _open(path) as f:
            head = f.read(9)
            return _by_content(path, f, head, size, keep_tensors)
    except PermissionError as e:
        return FileId(path, "unreadable", size, detail=f"permission denied ({e.strerror})")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return FileId(path, "symlink-loop", detail="too many levels of symbolic links")
        return FileId(path, "unreadable", size, detail=f"read failed ({e.strerror or e})")


def _by_content(path: str, f, head: bytes, size: int, keep: bool) -> FileId:
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip(path, size)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return FileId(path, "pickle", size, detail=f"pickle protocol {head[1]}")
    if head[:4] == b"GGUF":
        return FileId(path, "gguf", size)
    if len(head) >= 9 and head[8:9] == b"{":
        return _safetensors(path, f, head, size, keep)
    if len(head) < 8:
        kind = "json" if head.lstrip()[:1] in (b"{", b"[") else "text" if _texty(head) else "unknown"
        return FileId(path, kind, size, TOO_SMALL if kind != "json" else None, f"only {size} bytes")
    first = head.lstrip()[:1]
    if first in (b"{", b"["):
        return FileId(path, "json", size, detail="starts like JSON text")
    if _texty(head):
        return FileId(path, "text", size, detail=f"starts with {head[:8]!r}")
    return FileId(path, "unknown", size, detail=f"starts with {head[:8]!r}")


def _texty(b: bytes) -> bool:
    return all(32 <= c < 127 or c in (9, 10, 13) for c in b)


def _zip(path: str, size: int) -> FileId:
    import zipfile  # only lists the members; nothing inside is read

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except Exception as e:  # BadZipFile, OSError, EOFError, NotImplementedError, ...: listing failed
        return FileId(path, "zip", size, "corrupt-zip", f"corrupt zip ({e})")
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return FileId(path, "torch-zip", size, detail=f"zip with {len(names)} members incl. data.pkl")
    return FileId(path, "zip", size, detail=f"zip with {len(names)} members, no data.pkl")


_ENDS = re.compile(rb'"data_offsets"\s*:\s*\[\s*\d+\s*,\s*(\d+)\s*\]')
FULL_PARSE_LIMIT = 32 << 10  # headers up to 32 KiB are parsed as JSON entirely; larger ones are scanned


def _safetensors(path: str, f, head: bytes, size: int, keep: bool) -> FileId:
    n = int.from_bytes(head[:8], "little")
    if n > HEADER_CAP:
        return FileId(path, "safetensors", size, HEADER_TOO_LARGE, f"header length {n} is over the {HEADER_CAP} byte cap")
    if 8 + n > size:
        return FileId(path, "safetensors", size, HEADER_BEYOND_FILE,
                      f"header length {n} reaches past the end of the {size}-byte file (truncated?)")
    f.seek(8)
    raw = f.read(n)
    data_len = size - 8 - n
    if n <= FULL_PARSE_LIMIT:
        return _checked_json(path, raw, size, data_len, keep)
    # Large header (a big shard): check its structure without building 100k Python objects.
    tail = raw[-64:].rstrip(b" ")
    if not (raw[:1] == b"{" and tail[-1:] == b"}"):
        return FileId(path, "safetensors", size, HEADER_INVALID, "header is not a complete JSON object (cut off?)")
    count = raw.count(b'"dtype"')
    # A valid file's tensors tile the data section, so one of them ends exactly at its end. That is a cheap
    # test; only when it fails are all offsets scanned (a copy cut exactly at a tensor boundary slips through).
    if b",%d]" % data_len not in raw:
        ends = _ENDS.findall(raw)
        if len(ends) != count:
            return _checked_json(path, raw, size, data_len, keep)  # unusual layout: do it the slow, exact way
        last = max(map(int, ends), default=0)
        if last > data_len:
            return FileId(path, "safetensors", size, DATA_BEYOND_FILE,
                          f"tensor data ends at byte {last} of a {data_len}-byte data section (truncated?)")
    return FileId(path, "safetensors", size, None, f"{count} tensors", raw if keep else b"", count)


def _checked_json(path: str, raw: bytes, size: int, data_len: int, keep: bool) -> FileId:
    try:
        hdr = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        return FileId(path, "safetensors", size, HEADER_INVALID, f"header is not valid JSON ({e})")
    if not isinstance(hdr, dict):
        return FileId(path, "safetensors", size, HEADER_INVALID, "header is not a JSON object")
    count = 0
    for name, ent in hdr.items():
        if name == "__metadata__":
            continue
        count += 1
        why = _entry_problem(ent)
        if why:
            return FileId(path, "safetensors", size, HEADER_INVALID, f"tensor {name!r}: {why}")
        end = ent["data_offsets"][1]
        if end > data_len:
            return FileId(path, "safetensors", size, DATA_BEYOND_FILE,
                          f"tensor {name!r} ends at byte {end} of a {data_len}-byte data section (truncated?)")
    return FileId(path, "safetensors", size, None, f"{count} tensors", raw if keep else b"", count)


def _entry_problem(ent: Any) -> str:
    if not isinstance(ent, dict):
        return "entry is not an object"
    dt, shape, off = ent.get("dtype"), ent.get("shape"), ent.get("data_offsets")
    if not isinstance(dt, str):
        return "no dtype"
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        return "bad shape"
    if not (isinstance(off, list) and len(off) == 2 and all(isinstance(x, int) for x in off) and 0 <= off[0] <= off[1]):
        return "bad data_offsets"
    return ""
