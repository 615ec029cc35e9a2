"""`kt-launch convert` never reuses another checkpoint's converted layers (issue 23 item 3), and reads `--out`'s
manifest bounded, on both sides (item 10).

The rule that decides whether a finished layer may be kept is the launcher's (`convert.layer_reusable`,
`layers_to_redo`), a pure function of the manifest and the source identity read from the real tiny checkpoints'
safetensors headers, so it is tested here without kt-kernel; the end-to-end test converts model A, then model B into
the same --out with the real kt-kernel, where the loaded variant implements AMXINT8 (skipped with the reason
elsewhere). The worker's own manifest reader runs in a subprocess of the launcher's interpreter (it is standalone).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.backend import convert as cv

from backend.test_convert import SHAPE, fill_experts, kt, profile, weight_errors

REPO = Path(__file__).resolve().parents[2]
LAYERS = tuple(SHAPE.moe_layers)


def checkpoint(root: Path, seed: int) -> Path:
    synthetic.hf_model(root, SHAPE)
    fill_experts(root, seed)
    return root


def manifest_for(cp: cv.ConvertPlan, sources: dict | None) -> dict:
    """A finished conversion's manifest as the worker writes it (the files entries are what the worker checks)."""
    layers = {}
    for layer in cp.layers:
        rec = {"files": {"_numa_0/x.kt": {"size": 1, "sha256": "0" * 64}}}
        if sources is not None:
            rec["source"] = {**sources[str(layer)], "data_sha256": "f" * 64, "bytes_read": 1}
        layers[str(layer)] = rec
    return {**cp.identity(), "layers": layers}


def plan_of(model: Path, out: Path) -> cv.ConvertPlan:
    return cv.ConvertPlan(str(model), str(out), "AMXINT8", 1, 2, None, LAYERS, SHAPE.experts, 2, SHAPE.hidden,
                          SHAPE.moe_inter)


def test_a_layer_from_another_source_is_redone(tmp_path):
    """The class: another checkpoint of the same shape (same names, dtypes, offsets: the same header hash), a
    manifest without sources (older kt-launch), a shard rewritten or touched: each layer of it is redone."""
    a, b = checkpoint(tmp_path / "a", 0), checkpoint(tmp_path / "b", 1)
    out = tmp_path / "out"
    cp_a, cp_b = plan_of(a, out), plan_of(b, out)
    src_a, src_b = cv.source_identity(str(a), LAYERS), cv.source_identity(str(b), LAYERS)
    assert set(src_a) == {str(x) for x in LAYERS} and all(src_a[k]["shards"] for k in src_a)
    assert src_a["1"]["header_sha256"] == src_b["1"]["header_sha256"]  # the headers alone cannot tell them apart
    assert src_a["1"]["header_sha256"] != src_a["2"]["header_sha256"]
    done_a = manifest_for(cp_a, src_a)
    assert cv.layers_to_redo(cp_a, done_a, src_a) == ()  # the same source: kept (the worker checks its files)
    assert cv.layers_to_redo(cp_b, done_a, src_b) == LAYERS  # model B into A's output: every layer again
    assert cv.layers_to_redo(cp_a, manifest_for(cp_a, None), src_a) == LAYERS  # no source recorded: redone
    assert cv.layers_to_redo(cp_a, {**done_a, "layers": {}}, src_a) == ()  # nothing done: converted anyway
    assert not cv.layer_reusable({"files": {}, "source": "x"}, src_a["1"]) and not cv.layer_reusable(None, src_a["1"])
    assert cv.remaining_bytes(cp_b, done_a, cv.layers_to_redo(cp_b, done_a, src_b)) == 2 * cp_b.layer_bytes_out
    # the same checkpoint moved keeps its identity; a shard touched or rewritten in place does not
    moved = tmp_path / "moved"
    os.rename(a, moved)
    assert cv.source_identity(str(moved), LAYERS) == src_a
    shard = sorted(moved.glob("*.safetensors"))[0]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    touched = cv.source_identity(str(moved), LAYERS)
    assert cv.layers_to_redo(cp_a, done_a, touched) != ()
    # B's bytes written into A's shard in place, its size and mtime put back: the ctime still tells
    shard_b = sorted(b.glob("*.safetensors"))[0]
    with open(shard, "r+b") as f:
        f.write(shard_b.read_bytes())
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    forged = cv.source_identity(str(moved), LAYERS)
    assert all(forged[k]["shards"][shard.name]["mtime_ns"] == src_a[k]["shards"][shard.name]["mtime_ns"]
               for k in forged if shard.name in forged[k]["shards"])
    assert cv.layers_to_redo(cp_a, done_a, forged) != ()


def test_prepare_marks_another_models_layers_for_redo(tmp_path):
    """What the worker is told: the launcher reads --out's manifest and model.path's headers before anything runs."""
    a, b = checkpoint(tmp_path / "a", 0), checkpoint(tmp_path / "b", 1)
    out = tmp_path / "out"
    out.mkdir()
    for layer in LAYERS:
        (out / f"_layer_{layer}").mkdir()
    cp_a, cp_b = plan_of(a, out), plan_of(b, out)
    (out / cv.MANIFEST).write_text(json.dumps({"kind": "kt-launch-convert", **manifest_for(cp_a, cv.source_identity(
        str(a), LAYERS))}))
    pa, pb = cv.prepare(cp_a), cv.prepare(cp_b)
    assert pa.findings == [] and pa.redo == ()
    assert pb.findings == [] and pb.redo == LAYERS
    spec = cp_b.spec(sources=pb.sources, redo=pb.redo)
    assert spec["redo"] == list(LAYERS) and spec["sources"] == cv.source_identity(str(b), LAYERS)
    json.dumps(spec)  # it travels as JSON
    assert "other source" in cv.progress_line({"index": 1, "total": 2, "layer": 1, "other_source": True})


def test_an_unreadable_shard_header_is_refused_before_anything_runs(tmp_path):
    a = checkpoint(tmp_path / "a", 0)
    shard = sorted(a.glob("*.safetensors"))[0]
    raw = shard.read_bytes()
    shard.write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])  # a header size no safetensors file has
    out = tmp_path / "out"
    r = kt("convert", "--profile", profile(tmp_path, a, out), "--python", tmp_path / "no-such-python", timeout=120)
    assert r.returncode == 3 and "KT-E440" in r.stderr and shard.name in r.stderr, r.stderr[-1500:]
    assert "Traceback" not in r.stderr and not out.exists()


def test_model_b_into_model_a_output_is_converted_again(backend_python, kt_kernel, tmp_path):
    """Item 3 end to end: B's conversion into A's finished output says 0 skipped, converts every layer again (the
    read-back check compares with B's tensors), records B's source; a rerun of B then skips."""
    if not kt_kernel.implements("AMXINT8"):
        pytest.skip(f"the {kt_kernel.variant} variant has no AMXINT8 (its refusal is tested in test_convert.py); "
                    "the rule deciding redo/skip is tested above without kt-kernel")
    a, b = checkpoint(tmp_path / "a", 0), checkpoint(tmp_path / "b", 1)
    out = tmp_path / "out"
    r = kt("convert", "--profile", profile(tmp_path, a, out, python=backend_python), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["skipped"] == 0, r.stderr[-3000:]
    files_a = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.kt")}
    prof_b = tmp_path / "b.yaml"
    prof_b.write_text(profile(tmp_path, b, out, python=backend_python).read_text())
    r = kt("convert", "--profile", prof_b, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["skipped"] == 0 and doc["layers"] == 2, r.stderr[-3000:]
    assert all(v["passed"] for v in doc["verify"]) and "other source" in r.stderr
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.kt")} != files_a
    manifest = json.loads((out / cv.MANIFEST).read_text())
    want = cv.source_identity(str(b), LAYERS)
    for layer in LAYERS:
        src = manifest["layers"][str(layer)]["source"]
        assert {k: src[k] for k in cv.SOURCE_KEYS} == want[str(layer)]
        assert src["data_sha256"] == expert_bytes_sha256(b, layer)  # the bytes the worker read, hashed as read
    r = kt("convert", "--profile", prof_b, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["skipped"] == 2
    assert weight_errors(prof_b) == []


def expert_bytes_sha256(root: Path, layer: int) -> str:
    """sha256 over (name NUL sha256(raw bytes)) of the layer's routed-expert weights, expert by expert, gate/up/down
    (a hash list: the worker hashes the tensors in parallel)."""
    tensors = {}
    for shard in sorted(root.glob("*.safetensors")):
        raw = shard.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        for k, v in json.loads(raw[8:8 + n]).items():
            if k != "__metadata__":
                a, e = v["data_offsets"]
                tensors[k] = raw[8 + n + a:8 + n + e]
    h = hashlib.sha256()
    for e in range(SHAPE.experts):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            name = f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"
            h.update(name.encode() + b"\0" + hashlib.sha256(tensors[name]).digest())
    return h.hexdigest()


# -- item 10: the manifest is read bounded --------------------------------------------------------------

HOSTILE = ["fifo", "dev-zero", "huge", "deep", "layers-not-object", "not-utf8"]


def plant(out: Path, kind: str) -> None:
    m = out / cv.MANIFEST
    if kind == "fifo":
        os.mkfifo(m)
    elif kind == "dev-zero":
        m.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(m, "wb") as f:
            f.truncate(1 << 34)  # 16 GiB of holes
    elif kind == "deep":
        m.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "layers-not-object":
        m.write_text(json.dumps({"kind": "kt-launch-convert", "layers": 5}))
    else:
        m.write_bytes(b'{"kind": "\xff"}')


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_manifest_is_refused_by_the_launcher(tmp_path, kind):
    src = checkpoint(tmp_path / "model", 0)
    out = tmp_path / "out"
    out.mkdir()
    plant(out, kind)
    r = kt("convert", "--profile", profile(tmp_path, src, out), "--python", tmp_path / "no-such-python", timeout=60)
    assert r.returncode == 3 and "KT-E422" in r.stderr and cv.MANIFEST in r.stderr, r.stderr[-1500:]
    assert "Traceback" not in r.stderr and sorted(p.name for p in out.iterdir()) == [cv.MANIFEST]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_the_workers_manifest_reader_is_bounded(tmp_path):
    """The worker is standalone (no kt_launch import): its own reader refuses the same files, without hanging."""
    for kind in HOSTILE:
        out = tmp_path / kind
        out.mkdir()
        plant(out, kind)
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO / "kt_launch" / "backend")!r})
import convert_worker as cw
got = {{}}
for kind in {HOSTILE!r}:
    try:
        cw.read_manifest({str(tmp_path)!r} + "/" + kind + "/" + cw.MANIFEST)
        got[kind] = "read"
    except cw.ConvertError as e:
        got[kind] = [e.kind, e.message]
got["absent"] = cw.read_manifest({str(tmp_path)!r} + "/none/" + cw.MANIFEST)
print(json.dumps(got))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got.pop("absent") is None
    for kind, ans in got.items():
        assert ans != "read" and ans[0] == "foreign_output" and cv.MANIFEST in ans[1], (kind, ans)


def test_the_worker_hashes_the_bytes_it_reads(backend_python, tmp_path):
    """data_sha256 is fed by the worker's own read (real torch and safetensors of the backend venv, no kt-kernel):
    the same bytes a plain read of the shards gives, so the record says what the layer was converted from."""
    b = checkpoint(tmp_path / "b", 1)
    spec = {"num_experts": SHAPE.experts, "hidden_size": SHAPE.hidden, "moe_intermediate_size": SHAPE.moe_inter}
    code = f"""
import hashlib, json, sys, torch
sys.path.insert(0, {str(REPO / "kt_launch" / "backend")!r})
import convert_worker as cw
table = cw.tensor_table({str(b)!r})
out = {{}}
for layer in {list(LAYERS)!r}:
    h = hashlib.sha256()
    gate, up, down, n = cw.read_layer(torch, table, layer, {spec!r}, h)
    out[layer] = [h.hexdigest(), n]
reader = cw.Reader(torch, table, {spec!r}, {list(LAYERS)!r})  # the conversion's own path: hashed on another thread
for layer in {list(LAYERS)!r}:
    gate, up, down, n, hashed, read_s, wait_s = reader.take(layer)
    assert [hashed.result()[0], n] == out[layer], layer
    reader.release()
reader.close()
print(json.dumps(out))
"""
    r = subprocess.run([backend_python, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for layer in LAYERS:
        assert got[str(layer)] == [expert_bytes_sha256(b, layer), SHAPE.experts * 3 * SHAPE.hidden * SHAPE.moe_inter * 2]


@pytest.mark.parametrize("command", ["convert", "probe", "tune"])
def test_a_refusal_under_json_prints_the_document(tmp_path, command):
    """A refused probe, tune or convert with --json printed nothing on stdout; now the verdict, ok and findings."""
    prof = profile(tmp_path, tmp_path / "no-model", tmp_path / "out")
    r = kt(command, "--profile", prof, "--python", tmp_path / "no-such-python", "--json", timeout=120)
    assert r.returncode == 3, r.stderr[-1500:]
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["ok"] is False and doc["verdict"].startswith("BLOCKED")
    assert "KT-E410" in {f["code"] for f in doc["findings"] if f["level"] == "error"}
    assert "KT-E410" in r.stderr and not (tmp_path / "out").exists()
    section = (REPO / "docs" / "JSON.md").read_text().split("## When probe, tune or convert is refused")[1]
    assert all(f"`{k}`" in section.split("\n## ")[0] for k in doc)  # the refusal document is documented
