"""kt-kernel conversion worker: runs in the *target* interpreter, never in the launcher.

Executed as ``python /abs/path/convert_worker.py`` with one JSON spec on stdin (built by
kt_launch.backend.convert); writes exactly one JSON object to the original stdout, and one
``KT-CONVERT-PROGRESS {json}`` line per layer to stderr (the launcher turns those into its progress line).

Why it is built like this:
  - kt-kernel's own quantizer does the work: ``KTMoEWrapper(..., cpu_save=True)`` +
    ``load_weights_from_tensors`` quantizes one MoE layer and writes ``<weight_path>/_layer_L/_numa_N/*.kt``
    (kt_kernel/utils/amx.py). Nothing here quantizes by hand.
  - One layer at a time (the wrapper and the layer's tensors are dropped before the next), so RAM stays at
    about one BF16 layer plus its output.
  - kt-kernel writes into ``<out>/.kt-convert-tmp``; a finished layer dir is renamed into ``<out>`` and only
    then recorded in the manifest (size + sha256 per file), so an interrupted run never counts a half layer.
  - A rerun skips a layer whose files match the manifest (nothing is rewritten) and redoes one that does not.
    Each layer's manifest entry records its source (the launcher's `sources`: the shards' names, sizes and mtimes
    and a hash of its expert tensors' header entries; plus `data_sha256`, the sha256 of the bytes read here); the
    launcher lists in `redo` the finished layers of another source, which are converted again, never skipped.
  - The manifest is read bounded (a regular file, at most MANIFEST_MAX bytes, nesting checked): --out is the user's.
  - FP8 E4M3 experts with 128x128 ``weight_scale_inv`` blocks are dequantized per block to BF16 first.
  - Verified: the first and last layer are read back with kt-kernel's ``load_weights`` and compared with a
    float32 torch MoE of the (dequantized) source, with the probe's tolerances.

Standalone: the standard library at module level; torch, safetensors and kt_kernel inside ``main``; the
probe worker (same folder) for the reference MoE and tolerances. It must not import ``kt_launch``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import stat
import sys
import time
import traceback

WORKER_VERSION = 1
MANIFEST = "kt-convert-manifest.json"
TMP_DIR = ".kt-convert-tmp"
PROGRESS = "KT-CONVERT-PROGRESS "
PROJS = ("gate_proj", "up_proj", "down_proj")
MANIFEST_MAX = 64 << 20  # as the launcher's bounded reader (kt_launch/backend/convert.py MANIFEST_KIND)
MANIFEST_DEPTH = 8
HEADER_MAX = 100 * 1024 * 1024  # safetensors' own cap (kt_launch/facts/reader.py SAFETENSORS_HEADER_CAP)
BLOCK = 128

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_worker as pw  # noqa: E402  (the sibling standalone script: reference MoE, tolerances, pin shim)


class ConvertError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


# -- manifest -------------------------------------------------------------------------------------

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _hashes(paths):
    """sha256 of many files at once: hashlib releases the GIL, and one thread would make hashing a third of
    the conversion's time (measured on the AMX host)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
        return list(pool.map(sha256, paths))


def _walk(layer_dir):
    found = {}
    for root, _dirs, files in os.walk(layer_dir):
        for name in files:
            p = os.path.join(root, name)
            found[os.path.relpath(p, layer_dir)] = p
    return dict(sorted(found.items()))


def layer_files(layer_dir):
    """{relative path: {size, sha256}} of every file under a `_layer_L` dir."""
    found = _walk(layer_dir)
    digests = _hashes(list(found.values()))
    return {rel: {"size": os.path.getsize(p), "sha256": h} for (rel, p), h in zip(found.items(), digests)}


def layer_matches(out, layer, recorded):
    """The layer dir holds exactly the recorded files with the recorded sizes and hashes."""
    d = os.path.join(out, f"_layer_{layer}")
    if not isinstance(recorded, dict) or not recorded or not os.path.isdir(d):
        return False
    present = _walk(d)
    if set(present) != set(recorded):
        return False
    try:
        if any(os.path.getsize(p) != recorded[rel]["size"] for rel, p in present.items()):
            return False
        return _hashes(list(present.values())) == [recorded[rel]["sha256"] for rel in present]
    except (KeyError, TypeError):  # a damaged entry: the layer is redone
        return False


def _depth(node):
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(n, dict):
            stack.extend((v, d + 1) for v in n.values())
        elif isinstance(n, list):
            stack.extend((v, d + 1) for v in n)
    return deepest


def read_manifest(path):
    """The manifest, or None when there is none. Bounded like the launcher's reader: a regular file only (opened
    without blocking, so a FIFO never hangs), at most MANIFEST_MAX bytes (/dev/zero is refused, not read), nesting at
    most MANIFEST_DEPTH, a JSON object whose `layers` is an object of objects."""
    def bad(why):
        return ConvertError("foreign_output", f"{path}: {why}; choose another --out, or remove that file")

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise bad(f"cannot read ({e.strerror or e})")
    if not stat.S_ISREG(st.st_mode):
        raise bad("not a regular file (a FIFO, socket, device or directory)")
    if st.st_size > MANIFEST_MAX:
        raise bad(f"{st.st_size} bytes, more than a convert manifest may have ({MANIFEST_MAX})")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise bad("not a regular file")
            data = f.read(MANIFEST_MAX + 1)
    except OSError as e:
        raise bad(f"cannot read ({e.strerror or e})")
    if len(data) > MANIFEST_MAX:
        raise bad(f"more than the {MANIFEST_MAX} bytes a convert manifest may have")
    try:
        m = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise bad(f"nested deeper than {MANIFEST_DEPTH} levels")
    except ValueError as e:
        raise bad(f"not valid JSON ({str(e)[:120]})")
    if _depth(m) > MANIFEST_DEPTH:
        raise bad(f"nested deeper than {MANIFEST_DEPTH} levels")
    layers = m.get("layers", {}) if isinstance(m, dict) else None
    if not isinstance(layers, dict) or not all(isinstance(v, dict) for v in layers.values()):
        raise bad("not a kt-launch convert manifest")
    return m


def load_manifest(out, spec):
    path = os.path.join(out, MANIFEST)
    m = read_manifest(path)
    if m is not None and any(m.get(k) != spec["identity"][k] for k in spec["identity"]):
        raise ConvertError("foreign_output", f"{path} records another conversion ({m.get('method')}, "
                                             f"{m.get('threadpool_count')} pool(s)): choose another --out")
    return m or {**spec["identity"], "layers": {}}


def write_manifest(out, manifest):
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out, MANIFEST))


# -- source tensors ---------------------------------------------------------------------------------

def tensor_index(model_path):
    """({tensor name: shard file}, {tensor name: (start, end) byte range in its file}) of the routed experts,
    from the safetensors headers (the index json may be stale or absent)."""
    where, spans = {}, {}
    for f in sorted(glob.glob(os.path.join(model_path, "*.safetensors"))):
        with open(f, "rb") as h:
            n = int.from_bytes(h.read(8), "little")
            if n > HEADER_MAX:  # the launcher checked the headers before; a shard swapped since is not read whole
                raise ConvertError("weights", f"{f}: a safetensors header of {n} bytes (more than {HEADER_MAX})")
            header = json.loads(h.read(n))
        for k, v in header.items():
            if ".mlp.experts." in k and isinstance(v, dict):
                where[k] = f
                a, b = v["data_offsets"]
                spans[k] = (8 + n + a, 8 + n + b)
    return where, spans


def prefetch(where, spans, layer):
    """Ask the kernel to read the next layer's expert bytes ahead (page cache, no Python memory), so the
    disk works while kt-kernel quantizes this layer. A hint: ignored where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return
    mark = f"layers.{layer}.mlp.experts."
    ranges = {}
    for k, f in where.items():
        if mark in k:
            a, b = spans[k]
            lo, hi = ranges.get(f, (a, b))
            ranges[f] = (min(lo, a), max(hi, b))
    for f, (a, b) in ranges.items():
        try:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, a, b - a, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
        except OSError:
            pass


def _prefix(where, layer):
    for p in (f"model.layers.{layer}.mlp.experts.", f"language_model.model.layers.{layer}.mlp.experts.",
              f"model.language_model.layers.{layer}.mlp.experts."):
        if p + "0.gate_proj.weight" in where:
            return p
    raise ConvertError("weights", f"no routed-expert tensors for layer {layer} (model.layers.{layer}.mlp.experts.0."
                                  "gate_proj.weight) in the model's safetensors")


def dequant_fp8(torch, q, scale_inv):
    """FP8 E4M3 with one float32 scale per 128x128 block -> bf16 (w = q * scale[i//128, j//128])."""
    rows, cols = q.shape
    s = scale_inv.float().repeat_interleave(BLOCK, 0)[:rows].repeat_interleave(BLOCK, 1)[:, :cols]
    return (q.float() * s).to(torch.bfloat16)


def read_layer(torch, where, layer, spec, handles, digest=None):
    """(gate [E,I,H], up [E,I,H], down [E,H,I]) in bf16, and the bytes read from disk; `digest` (a hashlib object)
    is fed every tensor's bytes as read, in a fixed order (the layer's source record, data_sha256)."""
    from safetensors import safe_open

    E, H, I = spec["num_experts"], spec["hidden_size"], spec["moe_intermediate_size"]
    p = _prefix(where, layer)
    shapes = {"gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
    out = {proj: torch.empty((E, *shapes[proj]), dtype=torch.bfloat16) for proj in PROJS}
    nbytes = 0

    def get(name):
        nonlocal nbytes
        f = where.get(name)
        if f is None:
            raise ConvertError("weights", f"tensor {name} is missing from the model's safetensors")
        if f not in handles:
            handles.clear()  # one shard open at a time
            handles[f] = safe_open(f, framework="pt")
        t = handles[f].get_tensor(name)
        nbytes += t.numel() * t.element_size()
        if digest is not None:
            digest.update(name.encode() + b"\0")
            digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
        return t

    for e in range(E):
        for proj in PROJS:
            name = f"{p}{e}.{proj}.weight"
            t = get(name)
            if tuple(t.shape) != shapes[proj]:
                raise ConvertError("weights", f"{name} has shape {list(t.shape)}, the config says {list(shapes[proj])}")
            if t.dtype == torch.float8_e4m3fn:
                t = dequant_fp8(torch, t, get(f"{p}{e}.{proj}.weight_scale_inv"))
            elif t.dtype != torch.bfloat16:
                if t.dtype not in (torch.float16, torch.float32):
                    raise ConvertError("weights", f"{name} is {t.dtype}: convert reads BF16 or FP8 E4M3 experts")
                t = t.to(torch.bfloat16)
            out[proj][e].copy_(t)
    return out["gate_proj"], out["up_proj"], out["down_proj"], nbytes


# -- kt-kernel ---------------------------------------------------------------------------------------

def wrapper(torch, spec, layer, weight_path, cpu_save):
    from kt_kernel import KTMoEWrapper

    E = spec["num_experts"]
    try:
        return KTMoEWrapper(layer_idx=layer, num_experts=E, num_experts_per_tok=spec["top_k"],
                            hidden_size=spec["hidden_size"], moe_intermediate_size=spec["moe_intermediate_size"],
                            gpu_experts_mask=torch.zeros(E, dtype=torch.bool), cpuinfer_threads=int(spec["cpuinfer"]),
                            threadpool_count=int(spec["threadpool_count"]), weight_path=weight_path,
                            chunked_prefill_size=int(spec["chunked_prefill_size"]), cpu_save=cpu_save,
                            method=spec["method"], numa_nodes=spec.get("numa_nodes"))
    except Exception as e:  # noqa: BLE001
        kind, msg = pw._classify_exception(e, spec["method"], None)
        raise ConvertError(kind, msg)


class Reader:
    """Reads the next layer to convert on one background thread while kt-kernel quantizes the current one, so the
    disk and the quantizer overlap; at most two bf16 layers are in memory. The layer after that is hinted to
    the kernel (posix_fadvise), which reads it into the page cache."""

    def __init__(self, torch, where, spans, spec, order):
        from concurrent.futures import ThreadPoolExecutor

        self.torch, self.where, self.spans, self.spec, self.order = torch, where, spans, spec, list(order)
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.futures = {}

    def _read(self, layer):
        t0 = time.perf_counter()
        digest = hashlib.sha256()
        got = read_layer(self.torch, self.where, layer, self.spec, {}, digest)
        return (*got, digest.hexdigest()), time.perf_counter() - t0

    def _start(self, layer):
        if layer not in self.futures:
            self.futures[layer] = self.pool.submit(self._read, layer)

    def take(self, layer):
        """(gate, up, down, bytes, sha256 of the bytes, seconds the read took, seconds waited for it); starts reading
        the next one."""
        self._start(layer)
        t0 = time.perf_counter()
        got, read_s = self.futures.pop(layer).result()
        wait_s = time.perf_counter() - t0
        i = self.order.index(layer)
        if i + 1 < len(self.order):
            self._start(self.order[i + 1])
        if i + 2 < len(self.order):
            prefetch(self.where, self.spans, self.order[i + 2])
        return (*got, read_s, wait_s)

    def close(self):
        self.pool.shutdown(wait=False)


def convert_layer(torch, spec, layer, reader, manifest):
    out, method = spec["out"], spec["method"]
    tmp = os.path.join(out, TMP_DIR)
    t0 = time.perf_counter()
    gate, up, down, nbytes, data_sha256, t_read, t_wait = reader.take(layer)
    t_q0 = time.perf_counter()
    staged = os.path.join(tmp, f"_layer_{layer}")
    shutil.rmtree(staged, ignore_errors=True)
    w = wrapper(torch, spec, layer, tmp, cpu_save=True)
    w.load_weights_from_tensors(gate, up, down, torch.arange(spec["num_experts"], dtype=torch.int64))
    del w, gate, up, down
    t_quant = time.perf_counter() - t_q0
    if not os.path.isdir(staged):
        raise ConvertError("error", f"kt-kernel wrote no {staged} for {method} layer {layer}")
    files = layer_files(staged)
    final = os.path.join(out, f"_layer_{layer}")
    if os.path.lexists(final):  # a stale or mismatching layer of this conversion: replaced whole
        trash = os.path.join(tmp, f"_old_layer_{layer}")
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(staged, final)
    source = dict((spec.get("sources") or {}).get(str(layer)) or {}, data_sha256=data_sha256, bytes_read=nbytes)
    manifest["layers"][str(layer)] = {"files": files, "source": source}
    write_manifest(out, manifest)
    return {"layer": layer, "skipped": False, "bytes_in": nbytes, "bytes_out": sum(f["size"] for f in files.values()),
            "read_s": round(t_read, 4), "wait_s": round(t_wait, 4), "quant_s": round(t_quant, 4),
            "seconds": round(time.perf_counter() - t0, 4)}


def verify_layer(torch, spec, layer, where, handles):
    """Read the converted layer back with kt-kernel (load_weights) and compare one forward with torch."""
    gate, up, down, _ = read_layer(torch, where, layer, spec, handles)
    w = wrapper(torch, spec, layer, spec["out"], cpu_save=False)
    w.load_weights(torch.arange(spec["num_experts"], dtype=torch.int64))
    gen = torch.Generator().manual_seed(int(spec.get("seed", 1234)))
    qlen = min(16, int(spec["chunked_prefill_size"]))
    x = torch.randn((qlen, spec["hidden_size"]), generator=gen).to(torch.bfloat16)
    ids, wts = pw._routing(torch, qlen, spec, gen)
    if torch.cuda.is_available():  # as SGLang calls it: GPU tensors on a CUDA stream (the probe does the same)
        stream = torch.cuda.current_stream().cuda_stream
        out = w.forward(x.cuda(), ids.cuda(), wts.cuda(), stream)
        torch.cuda.synchronize()
    else:
        os.environ["KT_FORCE_SYNC_SUBMIT"] = "1"  # no CUDA stream: kt-kernel's synchronous path
        out = w.forward(x, ids, wts, 0)
    out = out.detach().to("cpu", copy=True)
    del w
    ref = pw._reference(torch, x, ids, wts, gate, up, down)
    err = pw._rel_err(torch, out, ref)
    tol = float(spec.get("tolerance") or pw.TOLERANCE[pw.method_family(spec["method"])])
    return {"layer": layer, "rel_err": err, "tolerance": tol, "passed": err <= tol}


def run(spec, result):
    t_start = time.perf_counter()
    try:
        import torch
        import kt_kernel
    except ImportError as e:
        raise ConvertError("kt_kernel_missing", f"torch/kt_kernel are not importable in {sys.executable}: {e}")
    result["cpu_variant"] = getattr(kt_kernel, "__cpu_variant__", "unknown")
    result["kt_kernel_version"] = getattr(kt_kernel, "__version__", "unknown")
    result["torch_version"] = torch.__version__
    try:
        import kt_kernel_ext.moe as moe_mod  # registered by kt_kernel/__init__.py
    except Exception:  # noqa: BLE001
        moe_mod = None
    cls = {"AMXINT8": "AMXInt8_MOE", "AMXINT4": "AMXInt4_MOE"}.get(spec["method"])
    if cls is None or not hasattr(moe_mod, cls):  # checked before anything is written
        raise ConvertError("method_unavailable", f"kt_kernel_ext.moe has no {cls or spec['method']} in the "
                                                 f"'{result['cpu_variant']}' variant")
    scratch = {"notes": []}
    result["pin_shim"] = pw._install_pin_shim(torch, scratch)
    out = spec["out"]
    os.makedirs(out, exist_ok=True)
    manifest = load_manifest(out, spec)
    shutil.rmtree(os.path.join(out, TMP_DIR), ignore_errors=True)  # an interrupted run's half layer
    os.makedirs(os.path.join(out, TMP_DIR))
    where, spans = tensor_index(spec["model_path"])
    handles = {}
    layers = [int(x) for x in spec["layers"]]
    done, checked = [], {}
    redo = {int(x) for x in spec.get("redo") or ()}  # finished from another source: converted again, never skipped
    for layer in layers:  # which layers are finished: their files match the manifest (hashed, not trusted)
        t0 = time.perf_counter()
        ok = layer not in redo and layer_matches(out, layer, (manifest["layers"].get(str(layer)) or {}).get("files"))
        checked[layer] = (ok, time.perf_counter() - t0)
    reader = Reader(torch, where, spans, spec, [layer for layer in layers if not checked[layer][0]])
    try:
        for i, layer in enumerate(layers):
            if checked[layer][0]:
                files = manifest["layers"][str(layer)]["files"]
                row = {"layer": layer, "skipped": True, "bytes_in": 0,
                       "bytes_out": sum(f["size"] for f in files.values()), "seconds": round(checked[layer][1], 4)}
            else:
                manifest["layers"].pop(str(layer), None)
                row = convert_layer(torch, spec, layer, reader, manifest)
                row["other_source"] = layer in redo
            done.append(row)
            sys.stderr.write(PROGRESS + json.dumps({"index": i + 1, "total": len(layers), **row}) + "\n")
            sys.stderr.flush()
    finally:
        reader.close()
    shutil.rmtree(os.path.join(out, TMP_DIR), ignore_errors=True)
    result["layers"] = done
    result["bytes_in"] = sum(r["bytes_in"] for r in done)
    result["bytes_out"] = sum(r["bytes_out"] for r in done)
    result["read_s"] = round(sum(r.get("read_s", 0.0) for r in done), 4)
    result["quant_s"] = round(sum(r.get("quant_s", 0.0) for r in done), 4)
    result["wait_s"] = round(sum(r.get("wait_s", 0.0) for r in done), 4)
    result["convert_s"] = round(time.perf_counter() - t_start, 4)
    if spec.get("verify", True) and layers:
        checks = sorted({layers[0], layers[-1]})
        result["verify"] = [verify_layer(torch, spec, layer, where, handles) for layer in checks]
        bad = [v for v in result["verify"] if not v["passed"]]
        if bad:
            raise ConvertError("tolerance", "; ".join(
                f"layer {v['layer']}: kt-kernel's read-back differs from the source by {v['rel_err']:.3g} "
                f"(tolerance {v['tolerance']})" for v in bad))
    result["seconds"] = round(time.perf_counter() - t_start, 4)


def run_lora(spec, result):
    """A raw fused expert LoRA -> an SGLang adapter dir, with kt-kernel's own converter; written under a temporary
    name beside the output and renamed when complete."""
    try:
        from kt_kernel.sft.convert_kt_to_sglang_adapter import convert_kt_to_sglang_adapter
    except ImportError as e:
        raise ConvertError("kt_kernel_missing", f"kt_kernel's LoRA converter is not importable in {sys.executable}: {e}")
    t0 = time.perf_counter()
    out = spec["out"].rstrip(os.sep)
    tmp = out + ".kt-convert-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = convert_kt_to_sglang_adapter(spec["input"], tmp, base_model_name_or_path=spec["base_model"])
    except (ValueError, FileNotFoundError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConvertError("weights", f"{spec['input']}: {e}")
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    os.rename(tmp, out)
    result["lora"] = {"output_dir": out, "tensor_count": summary.get("tensor_count"), "rank": summary.get("rank"),
                      "lora_alpha": summary.get("lora_alpha"), "target_modules": summary.get("target_modules"),
                      "bytes_out": sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)),
                      "seconds": round(time.perf_counter() - t0, 4)}


def preflight(result):
    """Whether torch and kt_kernel are installed here, without importing them (fast, no side effect): what the
    launcher checks before it reads or writes anything, so a missing install is refused, not a failed run. Also
    the torch requirement kt-kernel's own metadata declares (the fix line names it)."""
    import importlib.metadata as md
    import importlib.util

    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    result["torch"] = version("torch") if importlib.util.find_spec("torch") is not None else None
    result["kt_kernel"] = version("kt-kernel") if importlib.util.find_spec("kt_kernel") is not None else None
    result["safetensors"] = version("safetensors") if importlib.util.find_spec("safetensors") is not None else None
    try:
        reqs = md.requires("kt-kernel") or []
    except md.PackageNotFoundError:
        reqs = []
    result["kt_kernel_requires_torch"] = next((r.split(";")[0].strip() for r in reqs
                                               if r.replace(" ", "").lower().startswith("torch")
                                               and "extra" not in r), None)


def main():
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    result = {"worker_version": WORKER_VERSION, "ok": False, "error_kind": None, "error": None,
              "python": sys.executable}
    try:
        spec = json.loads(sys.stdin.read() or "{}")
        if not isinstance(spec, dict):
            raise ConvertError("invalid_config", "spec must be a JSON object")
        task = spec.get("task")
        preflight(result) if task == "preflight" else run_lora(spec, result) if task == "lora" else run(spec, result)
        result["ok"] = True
    except ConvertError as e:
        result["error_kind"], result["error"] = e.kind, e.message
    except Exception as e:  # noqa: BLE001
        result["error_kind"], result["error"] = "error", f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc(limit=8)
    os.write(out_fd, (json.dumps(result, default=str) + "\n").encode())
    os.close(out_fd)
    sys.stderr.flush()
    os._exit(0)  # kt-kernel's worker threads can hang interpreter teardown; the result is written


if __name__ == "__main__":
    main()
