"""Artifact facts: what the model dir, kt.weight_path, the MoE LoRA and the LoRA dirs hold, by content.

All file-system I/O of the preflight lives here (and in `fileid`). Only magic bytes and safetensors
headers are read; tensor data never, pickles never (zip archives are listed, not opened further).
Each file is identified once per run (a cache keyed by absolute path), so a weight dir that is the
model dir costs nothing extra. The server port is probed here too (a bind, closed at once).
"""

from __future__ import annotations

import errno
import os
import re
import socket

from kt_launch.core.artifacts import (AdapterDirFacts, ArtifactFacts, ExpertSet, ModelDirFacts, PortFact,
                                      WeightDirFacts)
from kt_launch.core.profile import UserConfig
from kt_launch.facts.adapters import read_adapter_config
from kt_launch.core.fileid import HEADER_INVALID, FileId
from kt_launch.facts.fileid import identify
from kt_launch.facts.reader import INDEX, ReadError, parse_json, read_bytes

WEIGHT_EXTS = (".safetensors", ".bin", ".pt", ".pth")  # what SGLang's LoRA loader globs (non-recursive)
PROJS = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down", "w1": "gate", "w3": "up", "w2": "down"}
MAIN_SUFFIXES = ("weight", "qweight", "weight_packed")

_WS = rb"\s*"
_HF_EXPERT = re.compile(
    rb'"(?:model\.|language_model\.model\.|model\.language_model\.)?layers\.(\d+)\.(?:mlp|block_sparse_moe|ffn)\.experts\.'
    rb'(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.(\w+)"' + _WS + rb":" + _WS + rb"\{" + _WS + rb'"dtype"' + _WS
    + rb":" + _WS + rb'"(\w+)"' + _WS + rb"," + _WS + rb'"shape"' + _WS + rb":" + _WS + rb"\[[\d,\s]*\]" + _WS + rb","
    + _WS + rb'"data_offsets"' + _WS + rb":" + _WS + rb"\[" + _WS + rb"(\d+)" + _WS + rb"," + _WS + rb"(\d+)")
_HF_EXPERT_FAST = re.compile(  # the compact layout every safetensors writer emits
    rb'"(?:model\.|language_model\.model\.|model\.language_model\.)?layers\.(\d+)\.(?:mlp|block_sparse_moe|ffn)\.experts\.'
    rb'(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.(\w+)":\{"dtype":"(\w+)","shape":\[[\d,]*\],"data_offsets":\[(\d+),'
    rb'(\d+)\]')
_MAIN_B = {s.encode() for s in MAIN_SUFFIXES}
_PROJ_B = {k.encode(): v for k, v in PROJS.items()}
_HF_EXPERT_STR = re.compile(
    r"^(?:model\.|language_model\.model\.|model\.language_model\.)?layers\.(\d+)\.(?:mlp|block_sparse_moe|ffn)\.experts\."
    r"(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.(\w+)$")
_MTP_EXPERT = re.compile(rb'"mtp\.[^"]*?\.experts\.')
# Routed experts stored as one 3-D tensor per projection (every expert of a layer): Qwen3.5-MoE
# `...mlp.experts.gate_up_proj` [E, 2I, H] / `down_proj` (sglang-kt qwen3_5.py:1298-1345), gpt-oss MXFP4
# `...mlp.experts.gate_up_proj_blocks/_scales/_bias` (gpt_oss.py:721, 813-870), Llama-4
# `...feed_forward.experts.gate_up_proj` [E, H, 2I] / `down_proj` (mllama4.py:755-816). Core/archs.py has the table.
_FUSED_EXPERT = re.compile(
    rb'"(?:model\.|language_model\.model\.|model\.language_model\.)?layers\.(\d+)\.(?:mlp|feed_forward)\.experts\.'
    rb'(gate_up_proj|down_proj)(\w*)":\{"dtype":"(\w+)","shape":\[(\d+)[\d,]*\],"data_offsets":\[(\d+),(\d+)\]')
_FUSED_MAIN = {b"", b"_blocks", b".weight"}
_AMX_KEY = re.compile(rb'"blk\.(\d+)\.ffn_(?:gate|up|down)_exps\.(\d+)\.numa\.(\d+)\.weight"')
_AMX_ANY = re.compile(rb'"blk\.\d+\.ffn_(?:gate|up|down)_exps\.')
_KT_FILE = re.compile(r"_(up|gate|down)_(\d+)_(\d+)Byte_(quant|scale)_\.kt$")
_LORA_EXPERT = re.compile(
    r"^(?:base_model\.model\.model\.|base_model\.model\.|base_model\.)?(?:model\.)?layers\.(\d+)\.mlp\.experts\.(\d+)\."
    r"(gate|up|down)_proj\.lora_(A|B)(?:\.default)?\.weight$")


class _Cache:
    def __init__(self) -> None:
        self._ids: dict[str, FileId] = {}

    def id(self, path: str) -> FileId:
        key = os.path.abspath(path)
        got = self._ids.get(key)
        if got is None:
            got = self._ids[key] = identify(path)
        return got


def gather_artifacts(cfg: UserConfig) -> ArtifactFacts:
    cache = _Cache()
    problems: list[str] = []

    def guarded(what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # an exotic file system or a bug: a finding (KT-W200), never a traceback
            problems.append(f"{what}: {type(e).__name__}: {e}")
            return None

    model = guarded("model.path", model_dir_facts, cfg.model.path, cache)
    weights = guarded("kt.weight_path", weight_dir_facts, cfg.kt.weight_path, cache) if cfg.kt.weight_path else None
    moe, moe_dir = None, None
    if cfg.moe_lora is not None:
        moe = guarded("moe_lora.path", cache.id, cfg.moe_lora.path)
        if moe is not None and moe.kind == "directory":
            moe_dir = guarded("moe_lora.path", adapter_dir_facts, cfg.moe_lora.path, cache)
    loras: dict[str, AdapterDirFacts] = {}
    for i, item in enumerate(cfg.lora.paths):
        p = item if isinstance(item, str) else item.path
        if p not in loras:
            got = guarded(f"lora.paths[{i}]", adapter_dir_facts, p, cache)
            if got is not None:
                loras[p] = got
    port = guarded("server.port", probe_port, cfg.server.host, cfg.server.port)
    return ArtifactFacts(model, weights, moe, moe_dir, loras, port, tuple(problems))


# -- HF model dir ---------------------------------------------------------------------------

def model_dir_facts(path: str, cache: _Cache) -> ModelDirFacts:
    node = cache.id(path)
    if node.kind != "directory":
        return ModelDirFacts(path, node)
    index_path = os.path.join(path, "model.safetensors.index.json")
    names, problem, index = None, None, None
    idx = cache.id(index_path)
    if idx.kind != "missing":
        index = index_path
        names, problem = _read_index(index_path, idx)
    if names is None:
        names = sorted(e.name for e in _scandir(path) if e.name.endswith(".safetensors"))
    shards, missing = [], []
    for name in names:
        fid = cache.id(os.path.join(path, name))
        if fid.kind == "missing":
            missing.append(name)
        else:
            shards.append(fid)
    return ModelDirFacts(path, node, index, problem, tuple(missing), tuple(shards), hf_experts(shards))


def _read_index(path: str, fid: FileId) -> tuple[list[str] | None, str | None]:
    if fid.kind in ("unreadable", "directory", "symlink-loop", "empty", "special"):
        return None, f"{path} is {fid.describe()}, not the JSON index"
    try:
        raw = read_bytes(path, INDEX)  # bounded: regular files only, size cap
    except ReadError as e:
        return None, str(e)
    if len(raw) > (1 << 20):  # big index (100k tensors): check its shape, collect the shard names by scanning
        head, tail = raw[:64].lstrip(), raw[-64:].rstrip()
        if head[:1] == b"{" and tail[-1:] == b"}" and b'"weight_map"' in raw and raw.count(b"{") <= INDEX.max_depth:
            chunks = raw.split(b'.safetensors"')[:-1]  # each ends with the start of a name: `..."model-00001-of-00163`
            names = {c[c.rfind(b'"') + 1:] + b".safetensors" for c in chunks}
            try:
                return sorted(n.decode("utf-8") for n in names), None
            except UnicodeDecodeError as e:
                return None, f"{path}: not valid UTF-8 ({e})"
    try:
        data = parse_json(path, raw, INDEX)  # depth cap, duplicate keys, NaN and 1e400 refused
    except ReadError as e:
        return None, str(e)
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
        return None, f"{path}: has no `weight_map` object of tensor -> shard file"
    return sorted(set(wm.values())), None


def hf_experts(files) -> ExpertSet:
    main_rows: set[tuple] = set()
    dtypes: set = set()
    suffixes: set = set()
    nbytes = count = 0
    dtype_bytes: dict[tuple, int] = {}
    fused_main: dict[tuple, set] = {}  # (layer, experts in the tensor) -> projections seen
    for fid in files:
        if not isinstance(fid, FileId) or not fid.ok_safetensors or b".experts." not in fid.header:
            continue
        rows = _HF_EXPERT_FAST.findall(fid.header)
        n = fid.header.count(b".experts.")
        if b'"mtp.' in fid.header:  # Qwen3-Next / Qwen3.5's MTP block: not a routed expert SGLang loads (weights.py)
            n -= len(_MTP_EXPERT.findall(fid.header))
        if b"experts.gate_up_proj" in fid.header or b"experts.down_proj" in fid.header:
            fused = _FUSED_EXPERT.findall(fid.header)
            n -= len(fused)
            count += len(fused)
            for layer, proj, suffix, dtype, e, start, end in fused:
                nbytes += int(end) - int(start)
                key = (layer, dtype)
                dtype_bytes[key] = dtype_bytes.get(key, 0) + int(end) - int(start)
                suffixes.add(suffix.lstrip(b"_.") or b"weight")
                if suffix in _FUSED_MAIN:
                    dtypes.add(dtype)
                    fused_main.setdefault((layer, int(e)), set()).add(proj)
        if len(rows) != n:
            rows = _HF_EXPERT.findall(fid.header)  # tolerate whitespace
        if len(rows) != n:  # unusual header layout: parse it fully
            try:
                tensors = fid.tensors
            except (ValueError, KeyError, TypeError):
                tensors = {}  # not JSON after all: its experts count as missing
            rows = [(m[1].encode(), m[2].encode(), m[3].encode(), m[4].encode(), t.dtype.encode(), b"0",
                     str(t.nbytes).encode()) for name, t in tensors.items() if (m := _HF_EXPERT_STR.match(name))]
        count += len(rows)
        nbytes += sum(map(int, [r[6] for r in rows])) - sum(map(int, [r[5] for r in rows]))
        _add_bytes(rows, dtype_bytes)
        suffixes.update({r[3] for r in rows})
        main = [r for r in rows if r[3] in _MAIN_B]
        dtypes.update({r[4] for r in main})
        main_rows.update({(r[0], r[1], _PROJ_B[r[2]]) for r in main})
    per_le: dict[tuple, int] = {}
    for layer, expert, _ in main_rows:
        k = (layer, expert)
        per_le[k] = per_le.get(k, 0) + 1
    layers: dict[int, int] = {}
    for (layer, _), n in per_le.items():
        li = int(layer)
        layers[li] = layers.get(li, 0) + (n == 3)
    for (layer, e), projs in fused_main.items():  # one gate_up and one down tensor hold all E experts of the layer
        if projs == {b"gate_up_proj", b"down_proj"}:
            layers[int(layer)] = layers.get(int(layer), 0) + e
    layer_bytes: dict[int, int] = {}
    for (layer, _), n in dtype_bytes.items():
        layer_bytes[int(layer)] = layer_bytes.get(int(layer), 0) + n
    return ExpertSet(dict(sorted(layers.items())), frozenset(d.decode() for d in dtypes),
                     frozenset(x.decode() for x in suffixes), nbytes, count,
                     dict(sorted(layer_bytes.items())),
                     {(int(k[0]), k[1].decode()): v for k, v in dtype_bytes.items()})


def _add_bytes(rows, dtype_bytes: dict) -> None:
    """Per-layer and per-(layer, dtype) byte sums of expert rows (layer, expert, proj, suffix, dtype, start, end): the
    memory plan's split, from the rows preflight already scanned (no second pass over the headers)."""
    sizes = map(int.__sub__, map(int, [r[6] for r in rows]), map(int, [r[5] for r in rows]))
    for r, n in zip(rows, sizes):
        key = (r[0], r[4])
        dtype_bytes[key] = dtype_bytes.get(key, 0) + n


# -- kt.weight_path -------------------------------------------------------------------------

def _scandir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def weight_dir_facts(path: str, cache: _Cache) -> WeightDirFacts:
    node = cache.id(path)
    if node.kind == "gguf":
        return WeightDirFacts(path, node, gguf=(node,))
    if node.kind != "directory":
        return WeightDirFacts(path, node)
    st_files: list[FileId] = []
    gguf: list[FileId] = []
    bad: list[FileId] = []
    by_name: dict[str, list[str]] = {}
    kt_layers: dict[int, str] = {}
    top = 0
    stack = [(path, 0)]
    while stack:  # os.walk order does not matter; symlinked dirs are not followed (as os.walk)
        d, depth = stack.pop()
        for e in _scandir(d):
            name = e.name
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if depth == 0 and name.startswith("_layer_") and name[7:].isdigit():
                    kt_layers[int(name[7:])] = e.path
                else:
                    stack.append((e.path, depth + 1))
                continue
            if name.endswith(".safetensors"):
                fid = cache.id(e.path)
                by_name.setdefault(name, []).append(e.path)
                if fid.kind in ("symlink-loop", "unreadable", "missing", "directory", "special"):
                    bad.append(fid)
                st_files.append(fid)
                top += depth == 0
            elif name.endswith(".gguf") and depth == 0:
                gguf.append(cache.id(e.path))
    dups = {n: tuple(sorted(ps)) for n, ps in sorted(by_name.items()) if len(ps) > 1}
    layers, numa, gate_bytes, nbytes, form = _amx_safetensors(st_files)
    if not layers and kt_layers:
        layers, numa, gate_bytes, nbytes = _amx_kt_dirs(kt_layers)
        form = "kt" if layers else None
    return WeightDirFacts(path, node, layers, numa, form, gate_bytes, nbytes, hf_experts(st_files), tuple(gguf),
                          tuple(st_files), top, dups, tuple(bad))


def _amx_safetensors(files: list[FileId]):
    pairs: set[tuple[bytes, bytes]] = set()  # (layer, expert)
    parts: set[tuple[bytes, bytes]] = set()  # (layer, numa partition)
    nbytes = 0
    for fid in files:
        if not fid.ok_safetensors or not _AMX_ANY.search(fid.header):
            continue
        nbytes += fid.data_bytes
        rows = _AMX_KEY.findall(fid.header)
        pairs.update({(r[0], r[1]) for r in rows})
        parts.update({(r[0], r[2]) for r in rows})
    experts: dict[int, int] = {}
    for layer, _ in pairs:
        li = int(layer)
        experts[li] = experts.get(li, 0) + 1
    numa: dict[int, int] = {}
    for layer, n in parts:
        li, ni = int(layer), int(n) + 1
        numa[li] = max(numa.get(li, 0), ni)
    gate_bytes = _gate_bytes(files, min(experts), numa[min(experts)]) if experts else None
    return dict(sorted(experts.items())), dict(sorted(numa.items())), gate_bytes, nbytes, "safetensors" if experts else None


def _gate_bytes(files: list[FileId], layer: int, parts: int) -> int | None:
    total = 0
    for n in range(parts):
        rx = re.compile(rb'"blk\.%d\.ffn_gate_exps\.0\.numa\.%d\.weight"\s*:\s*\{[^}]*?"data_offsets"\s*:\s*\[\s*(\d+)\s*,'
                        rb'\s*(\d+)' % (layer, n))
        for fid in files:
            if fid.ok_safetensors and (m := rx.search(fid.header)):
                total += int(m[2]) - int(m[1])
                break
        else:
            return None
    return total or None


def _amx_kt_dirs(kt_layers: dict[int, str]):
    layers: dict[int, int] = {}
    numa: dict[int, int] = {}
    gate_bytes = None
    nbytes = 0
    for layer, d in sorted(kt_layers.items()):
        parts = [e for e in _scandir(d) if e.name.startswith("_numa_") and e.name[6:].isdigit()]
        numa[layer] = len(parts)
        experts: set[int] = set()
        gb = 0
        for p in parts:
            for e in _scandir(p.path):
                m = _KT_FILE.search(e.name)
                if m:
                    experts.add(int(m[2]))
                    nbytes += int(m[3])
                    if m[1] == "gate" and m[2] == "0" and m[4] == "quant":
                        gb += int(m[3])
        layers[layer] = len(experts)
        if gate_bytes is None and gb:
            gate_bytes = gb
    return layers, numa, gate_bytes, nbytes


# -- adapters -------------------------------------------------------------------------------

def adapter_dir_facts(path: str, cache: _Cache) -> AdapterDirFacts:
    node = cache.id(path)
    if node.kind != "directory":
        return AdapterDirFacts(path, node)
    config = read_adapter_config(path)
    entries = sorted(_scandir(path), key=lambda e: e.name)
    files = tuple(cache.id(e.path) for e in entries if e.name.endswith(WEIGHT_EXTS))
    fused = any(e.name == "fused_expert_lora.safetensors" for e in entries)
    st = [f for f in files if f.path.endswith(".safetensors")]
    main = next((f for f in st if os.path.basename(f.path) == "adapter_model.safetensors"), st[0] if st else None)
    expert: dict[tuple[int, int, str, str], tuple[int, ...]] = {}
    nonexpert = other = 0
    tensors = {}
    if main is not None and main.ok_safetensors:
        try:
            tensors = main.tensors
        except (ValueError, KeyError, TypeError) as e:  # a large header that scanned well but is not JSON
            bad = FileId(main.path, "safetensors", main.size, HEADER_INVALID, f"header is not valid JSON ({e})")
            files = tuple(bad if f is main else f for f in files)
            main = bad
    for name, t in tensors.items():
        m = _LORA_EXPERT.match(name)
        if m:
            expert[(int(m[1]), int(m[2]), m[3], m[4])] = t.shape
        elif ".lora_A" in name or ".lora_B" in name or ".lora_embedding_" in name:
            nonexpert += 1
        else:
            other += 1
    return AdapterDirFacts(path, node, config, files, main.path if main else None, expert, nonexpert, other, fused)


# -- server port ----------------------------------------------------------------------------

def probe_port(host: str, port: int) -> PortFact:
    """Whether SGLang could listen on host:port here (bind with SO_REUSEADDR, as uvicorn does)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        return PortFact(host, port, "unresolvable", str(e))
    family, stype, proto, _, addr = infos[0]
    try:
        s = socket.socket(family, stype, proto)
    except OSError as e:
        return PortFact(host, port, "unknown", str(e))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        return PortFact(host, port, "free")
    except OSError as e:
        status = {errno.EADDRINUSE: "in-use", errno.EACCES: "no-permission",
                  errno.EADDRNOTAVAIL: "not-local"}.get(e.errno, "unknown")
        return PortFact(host, port, status, e.strerror or str(e))
    finally:
        s.close()


# -- lookups outside a plan -----------------------------------------------------------------

def file_cache() -> _Cache:
    """A file-id cache for callers that inspect dirs outside a plan (`kt-launch init` scans the dirs beside a
    model with weight_dir_facts and the --lora paths with adapter_dir_facts)."""
    return _Cache()
