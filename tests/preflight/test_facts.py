"""Content identification and artifact facts (the only I/O of the preflight)."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest

from devtools import synthetic
from kt_launch.core import fileid
from kt_launch.facts.artifacts import _Cache, model_dir_facts, probe_port, weight_dir_facts
from kt_launch.facts.fileid import FULL_PARSE_LIMIT, identify


def test_kinds_by_content_not_name(tmp_path):
    st = synthetic.write_safetensors(tmp_path / "weights.pt", {"a": ("BF16", (4, 4))})  # safetensors named .pt
    tz = synthetic.write_torch_zip(tmp_path / "x.safetensors", {"a": (1, 2)})
    (tmp_path / "raw.bin").write_bytes(b"\x80\x02}q\x00.")
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "notes.safetensors").write_text("hello, this is text and not weights\n")
    (tmp_path / "c.json").write_text('{"a": 1}')
    import zipfile
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as z:
        z.writestr("readme.txt", "x")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to("nowhere")
    got = {p: identify(tmp_path / p).kind for p in ("weights.pt", "x.safetensors", "raw.bin", "m.gguf",
                                                     "empty.safetensors", "notes.safetensors", "c.json", "plain.zip",
                                                     "loop", "dangling", "nothing")}
    assert got == {"weights.pt": "safetensors", "x.safetensors": "torch-zip", "raw.bin": "pickle", "m.gguf": "gguf",
                   "empty.safetensors": "empty", "notes.safetensors": "text", "c.json": "json", "plain.zip": "zip",
                   "loop": "symlink-loop", "dangling": "missing", "nothing": "missing"}
    assert identify(tmp_path).kind == "directory"
    assert identify(st).ok_safetensors and identify(st).tensors["a"] == fileid.Tensor("BF16", (4, 4), 32)
    assert identify(tz).is_torch


def test_header_problems(tmp_path):
    p = synthetic.write_safetensors(tmp_path / "a.safetensors", {"a": ("F32", (8,))})
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    (tmp_path / "big").write_bytes((200 << 20).to_bytes(8, "little") + b"{" + bytes(16))
    (tmp_path / "beyond").write_bytes(raw[:8 + n // 2])
    (tmp_path / "data").write_bytes(raw[:-4])
    cut = raw[8:8 + n // 2]
    (tmp_path / "cut").write_bytes(len(cut).to_bytes(8, "little") + cut)
    probs = {x: identify(tmp_path / x).problem for x in ("big", "beyond", "data", "cut")}
    assert probs == {"big": fileid.HEADER_TOO_LARGE, "beyond": fileid.HEADER_BEYOND_FILE,
                     "data": fileid.DATA_BEYOND_FILE, "cut": fileid.HEADER_INVALID}


def test_large_header_scan_path(tmp_path):
    """Headers over the JSON-parse limit are scanned; experts and truncation are still found."""
    shape = synthetic.Shape(experts=96, layers=3)
    root = synthetic.hf_model(tmp_path / "m", shape, shards=1, sparse=True)
    shard = root / "model-00001-of-00001.safetensors"
    fid = identify(shard)
    assert len(fid.header) > FULL_PARSE_LIMIT and fid.ok_safetensors
    md = model_dir_facts(str(root), _Cache())
    assert md.experts.layers == {1: 96, 2: 96} and md.experts.dtypes == {"BF16"}
    assert md.experts.nbytes == 2 * 96 * 3 * shape.moe_inter * shape.hidden * 2
    os.truncate(shard, shard.stat().st_size - 1)
    assert identify(shard).problem == fileid.DATA_BEYOND_FILE


def test_large_header_with_spaces_falls_back(tmp_path):
    import json
    hdr, off = {}, 0
    for e in range(400):
        hdr[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"] = {"data_offsets": [off, off + 8], "dtype": "BF16",
                                                                   "shape": [2, 2]}
        off += 8
    raw = json.dumps(hdr, indent=1).encode()  # other key order, whitespace
    p = tmp_path / "odd.safetensors"
    p.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(off))
    fid = identify(p)
    assert len(raw) > FULL_PARSE_LIMIT and fid.ok_safetensors
    from kt_launch.facts.artifacts import hf_experts
    assert hf_experts([fid]).count == 400


def test_weight_dir_facts(tmp_path):
    d = synthetic.amx_weights(tmp_path / "w", numa=2, bits=4)
    synthetic.amx_weights(tmp_path / "w" / "sub", skip_layers=(2, 3))
    w = weight_dir_facts(str(d), _Cache())
    assert w.looks_like == "amx" and w.amx_layers == {1: 8, 2: 8, 3: 8} and w.amx_numa[2] == 2
    assert w.amx_gate_bytes == synthetic.TINY.hidden * synthetic.TINY.moe_inter // 2
    assert list(w.duplicates) == ["layer-001.safetensors"] and w.top_safetensors == 3


def test_port_probe(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        assert probe_port("127.0.0.1", port).status == "in-use"
    finally:
        s.close()
    assert probe_port("127.0.0.1", port).status == "free"
    assert probe_port("no-such-host.invalid", 30000).status == "unresolvable"


def test_port_in_use_through_the_cli(tmp_path, monkeypatch):
    """On this machine (no --host-facts) a taken port is an error; planning for a recorded host skips it."""
    import kt_launch.app as app
    from kt_launch.facts.host import host_from_json
    from preflight.support import AMX_HOST, check, codes

    t = tmp_path / "t"
    synthetic.demo(t)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        profile = synthetic.amx_profile(t, server={"port": port})
        live = dataclasses.replace(host_from_json(AMX_HOST), local=True)  # gathered here: identity is the field
        monkeypatch.setattr(app, "gather_host", lambda *a, **k: live)
        rc, doc, _ = check(tmp_path, profile, None)
        assert rc == 3 and "KT-E232" in codes(doc, "error")
        rc, doc, _ = check(tmp_path, profile)  # --host-facts: another machine
        assert "KT-E232" not in codes(doc)
    finally:
        s.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    assert identify(tmp_path / "pipe.safetensors").kind == "special"  # opening it would block
