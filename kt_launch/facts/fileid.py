"""Identify a file by its content, never by its name, reading only magic bytes and headers.

Kinds: safetensors, torch-zip (torch.save archive: a zip holding `data.pkl`), zip, pickle (raw pickle,
also the legacy torch.save format), gguf, json, text, unknown, directory, empty, special, unreadable,
symlink-loop, missing. A file that looks like safetensors (8-byte little-endian header length, then `{`)
but is broken gets kind "safetensors" with `problem` set. Tensor data and pickles are never read:
zip archives are only listed, pickles only recognised by their protocol byte.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from itertools import accumulate
from typing import Any

from kt_launch.facts.reader import SAFETENSORS_HEADER as HEADER
from kt_launch.facts.reader import ReadError, parse_json

from kt_launch.facts.reader import SAFETENSORS_HEADER_CAP as HEADER_CAP  # safetensors itself refuses larger headers

from kt_launch.core.fileid import (DATA_BEYOND_FILE, DTYPE_BYTES, HEADER_BEYOND_FILE, HEADER_INVALID, HEADER_TOO_LARGE,
                                     TOO_SMALL, FileId)


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


_SEEN: dict[tuple, FileId] = {}  # identify's answers for regular files, by path and stat identity (this process)
_SEEN_MAX = 4096
_SEEN_HEADER_MAX = 1 << 20  # a larger header is not kept (a supervising launcher lives long): read again if asked


def identify(path: str | os.PathLike, keep_tensors: bool = True) -> FileId:
    """What `path` is, by content. Never raises for file-system problems.

    A regular file's answer is kept for this process under its path and stat identity (device, inode, size, mtime
    and ctime in ns; any write changes the ctime): a command that plans twice (`convert` plans again with its
    outputs) reads each unchanged shard's header once."""
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
    key = (path, keep_tensors, st.st_dev, st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns)
    seen = _SEEN.get(key)
    if seen is not None:
        return seen
    found = _read(path, size, keep_tensors)
    if found.kind != "unreadable" and len(found.header) <= _SEEN_HEADER_MAX:
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[key] = found
    return found


def _read(path: str, size: int, keep_tensors: bool) -> FileId:
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
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        # safetensors before the pickle test: a header length like 0x...0280 starts with the bytes of pickle
        # protocol 2 (80 02); a pickle's first 8 bytes read as a length far beyond the file
        return _safetensors(path, f, head, size, keep)
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


# One tensor entry as every safetensors writer emits it (compact, keys in this order): dtype, shape, offsets;
# _NAMED also captures the tensor's name (slower: only used to name a problem).
_ENTRY = re.compile(rb'\{"dtype":"([^"]*)","shape":\[([\d,]*)\],"data_offsets":\[(\d+),(\d+)\]\}')
_NAMED = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)":' + _ENTRY.pattern)
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
    # Large header (a big shard): check every entry without building 100k Python objects.
    tail = raw[-64:].rstrip(b" ")
    if not (raw[:1] == b"{" and tail[-1:] == b"}"):
        return FileId(path, "safetensors", size, HEADER_INVALID, "header is not a complete JSON object (cut off?)")
    count = raw.count(b'"dtype"')
    entries = _ENTRY.findall(raw)
    if len(entries) != count:
        return _checked_json(path, raw, size, data_len, keep)  # unusual layout: do it the slow, exact way
    if _tiles(entries, data_len):  # the usual case, fast: in offset order, every size right, no gap
        return FileId(path, "safetensors", size, None, f"{count} tensors", raw if keep else b"", count)
    try:
        rows = [(name.decode("utf-8", "replace"), dt.decode("ascii", "replace"),
                 [int(d) for d in shape.split(b",")] if shape else [], int(a), int(b))
                for name, dt, shape, a, b in _NAMED.findall(raw)]
    except ValueError:  # an empty dimension (`[2,,3]`): not JSON
        return _checked_json(path, raw, size, data_len, keep)
    if len(rows) != count:
        return _checked_json(path, raw, size, data_len, keep)
    return _laid_out(path, size, data_len, rows, raw if keep else b"", count)


def _tiles(entries: list[tuple[bytes, bytes, bytes, bytes]], data_len: int) -> bool:
    """True when the entries, in header order, tile the data section exactly with the right sizes.
    Column-wise (C-speed list operations): a 100k-tensor shard takes a few tens of milliseconds."""
    if not entries:
        return data_len == 0
    dts, shapes, starts, ends = zip(*entries)
    if starts[0] != b"0" or starts[1:] != ends[:-1] or int(ends[-1]) != data_len:
        return False  # out of order, overlapping, a gap, or not ending at the end: the exact check says which
    keys = list(zip(dts, shapes))
    sizes = {k: _bits(*k) for k in set(keys)}
    if any(b is None or b % 8 for b in sizes.values()):
        return False
    sizes = {k: b // 8 for k, b in sizes.items()}
    # contiguous from 0, so each tensor's end is the running sum of the sizes before and of it
    return list(accumulate(map(sizes.__getitem__, keys))) == list(map(int, ends))


def _bits(dtype: bytes, shape: bytes) -> int | None:
    width = DTYPE_BYTES.get(dtype.decode("ascii", "replace"))
    if width is None or shape.startswith(b",") or shape.endswith(b",") or b",," in shape:
        return None
    bits = int(width * 8)
    for d in shape.split(b",") if shape else ():
        bits *= int(d)
    return bits


def _checked_json(path: str, raw: bytes, size: int, data_len: int, keep: bool) -> FileId:
    try:
        hdr = parse_json(path, raw, HEADER)  # depth cap, duplicate names, NaN refused; never a RecursionError
    except ReadError as e:
        return FileId(path, "safetensors", size, HEADER_INVALID, f"header is not valid JSON ({e.reason})")
    if not isinstance(hdr, dict):
        return FileId(path, "safetensors", size, HEADER_INVALID, "header is not a JSON object")
    rows = []
    for name, ent in hdr.items():
        if name == "__metadata__":
            continue
        why = _entry_problem(ent)
        if why:
            return FileId(path, "safetensors", size, HEADER_INVALID, f"tensor {_name(name)}: {why}")
        rows.append((name, ent["dtype"], ent["shape"], *ent["data_offsets"]))
    return _laid_out(path, size, data_len, rows, raw if keep else b"", len(rows))


def _laid_out(path: str, size: int, data_len: int, rows: list, raw: bytes, count: int) -> FileId:
    """The checks safetensors itself makes before it loads anything: a known dtype, a byte size that
    matches the shape, tensors that tile the data section from 0 to its end with no overlap or gap."""
    def bad(problem: str, detail: str) -> FileId:
        return FileId(path, "safetensors", size, problem, detail)

    last = max(rows, key=lambda r: r[4], default=None)
    if last is not None and last[4] > data_len:
        return bad(DATA_BEYOND_FILE, f"tensor {_name(last[0])} ends at byte {last[4]} of a {data_len}-byte data "
                                     "section (truncated?)")
    for name, dtype, shape, start, end in rows:
        width = DTYPE_BYTES.get(dtype)
        if width is None:
            return bad(HEADER_INVALID, f"tensor {_name(name)}: unknown dtype {dtype[:20]!r}")
        bits = int(width * 8)
        for d in shape:
            bits *= d
        if bits != (end - start) * 8:
            return bad(HEADER_INVALID, f"tensor {_name(name)}: shape {_dims(shape)} of {dtype} is "
                                       f"{_bytes(bits)} bytes, but its data_offsets [{start}, {end}] hold {end - start}")
    at, prev = 0, None
    for name, _, _, start, end in sorted(rows, key=lambda r: (r[3], r[4])):
        if start < at:
            return bad(HEADER_INVALID, f"tensors {_name(prev[0])} and {_name(name)} overlap: data_offsets "
                                       f"[{prev[3]}, {prev[4]}] and [{start}, {end}]")
        if start > at:
            return bad(HEADER_INVALID, f"bytes {at}..{start} of the data section belong to no tensor (before "
                                       f"{_name(name)}); safetensors refuses such a file")
        at, prev = end, (name, None, None, start, end)
    if at != data_len:
        return bad(HEADER_INVALID, f"the tensors end at byte {at} of a {data_len}-byte data section; safetensors "
                                   "refuses a file with bytes no tensor owns")
    return FileId(path, "safetensors", size, None, f"{count} tensors", raw, count)


def _name(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")


def _dims(shape) -> str:
    text = "[" + ", ".join(map(str, shape)) + "]"
    return text if len(text) <= 60 else text[:57] + "...]"


def _bytes(bits: int) -> str:
    return str(bits // 8) if bits % 8 == 0 else f"{bits / 8:g}"


def _entry_problem(ent: Any) -> str:
    if not isinstance(ent, dict):
        return "entry is not an object"
    dt, shape, off = ent.get("dtype"), ent.get("shape"), ent.get("data_offsets")
    if not isinstance(dt, str):
        return "no dtype"
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        return "bad shape"
    if not (isinstance(off, list) and len(off) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in off)
            and 0 <= off[0] <= off[1]):
        return "bad data_offsets"
    return ""
