"""Corrupt safetensors headers that still parse as JSON are findings, not a load-time crash in SGLang.

safetensors itself refuses a header whose tensors overlap, leave a gap, carry an unknown dtype, or whose
shape disagrees with its data_offsets (Metadata::validate); kt-launch says so first (KT-E207), naming the
file and the tensor. Real files come from devtools/synthetic.py; each case tampers with one header entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.core.fileid import HEADER_INVALID
from kt_launch.facts.fileid import identify
from preflight.support import check, codes, finding


def _shard(root: Path) -> Path:
    synthetic.demo(root)
    return root / "model" / "model-00002-of-00002.safetensors"


def _rewrite(path: Path, edit, data_delta: int = 0) -> None:
    """Apply `edit` to the parsed header and write the file back (data section grown by data_delta)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    edit(hdr)
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = raw[8 + n:]
    data = data + bytes(data_delta) if data_delta >= 0 else data[:data_delta]
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def _tensors(hdr: dict) -> list[str]:
    return sorted((k for k in hdr if k != "__metadata__"), key=lambda k: hdr[k]["data_offsets"])


def _overlap(hdr):
    a, b = _tensors(hdr)[:2]
    size = hdr[a]["data_offsets"][1] - hdr[a]["data_offsets"][0]
    start = hdr[a]["data_offsets"][0] + size // 2
    hdr[b]["data_offsets"] = [start, start + hdr[b]["data_offsets"][1] - hdr[b]["data_offsets"][0]]
    return b


def _unknown_dtype(hdr):
    t = _tensors(hdr)[0]
    hdr[t]["dtype"] = "Q7_FANCY"
    return t


def _shape_mismatch(hdr):
    t = _tensors(hdr)[0]
    hdr[t]["shape"] = [d + 1 for d in hdr[t]["shape"]]
    return t


def _gap(hdr):
    t = _tensors(hdr)[-1]
    s, e = hdr[t]["data_offsets"]
    hdr[t]["data_offsets"] = [s + 2, e + 2]
    return t


CASES = {  # name -> (edit, data section growth, words the message must hold)
    "overlapping data_offsets": (_overlap, 0, "overlap"),
    "unknown dtype": (_unknown_dtype, 0, "unknown dtype 'Q7_FANCY'"),
    "shape disagrees with offsets": (_shape_mismatch, 0, "but its data_offsets"),
    "gap between tensors": (_gap, 2, "belong to no tensor"),
    "bytes after the last tensor": (lambda hdr: _tensors(hdr)[-1], 16, "bytes no tensor owns"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_layout_is_kt_e207_naming_file_and_tensor(tmp_path, case):
    edit, grow, words = CASES[case]
    root = tmp_path / "t"
    shard = _shard(root)
    named = []
    _rewrite(shard, lambda hdr: named.append(edit(hdr)), grow)
    fid = identify(shard)
    assert fid.problem == HEADER_INVALID and words in fid.detail, fid.detail
    rc, doc, err = check(tmp_path, synthetic.moe_lora_profile(root))
    assert rc == 3 and "KT-E207" in codes(doc, "error"), doc.get("findings")
    f = finding(doc, "KT-E207")
    assert str(shard) in f["message"] and words in f["message"]
    if case != "bytes after the last tensor":
        assert named[0] in f["message"]
    assert "Traceback" not in err


def _big(path: Path, n: int = 600) -> Path:
    """A shard whose header is over fileid's full-parse limit (the scanned path)."""
    tensors = {f"model.layers.{i // 60}.mlp.experts.{i % 60}.gate_proj.weight": ("BF16", (4, 8)) for i in range(n)}
    return synthetic.write_safetensors(path, tensors, sparse=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_large_headers_get_the_same_checks(tmp_path, case):
    edit, grow, words = CASES[case]
    p = _big(tmp_path / "big.safetensors")
    assert identify(p).ok_safetensors and len(p.read_bytes()) > 32 << 10
    _rewrite(p, edit, grow)
    fid = identify(p)
    assert fid.problem == HEADER_INVALID and words in fid.detail, fid.detail


def test_a_valid_large_header_in_any_entry_order_is_fine(tmp_path):
    p = _big(tmp_path / "big.safetensors")
    _rewrite(p, lambda hdr: hdr.update(dict(reversed(list(hdr.items())))), 0)
    fid = identify(p)
    assert fid.ok_safetensors and fid.ntensors == 600, fid.detail


@pytest.mark.parametrize("header", [
    b'{"a":' * 5000 + b"1" + b"}" * 5000,  # nested far past any header: no RecursionError
    b'{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}',
    b'{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4],"x":NaN}}',
    b'{"a":{"dtype":"BF16","shape":[true],"data_offsets":[0,4]}}',
])
def test_hostile_headers_are_invalid_not_a_crash(tmp_path, header):
    header += b" " * (-len(header) % 8)
    p = tmp_path / "x.safetensors"
    p.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    fid = identify(p)
    assert fid.kind == "safetensors" and fid.problem == HEADER_INVALID, fid
