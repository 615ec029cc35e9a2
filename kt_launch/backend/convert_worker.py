"""kt-kernel conversion worker: runs in the *target* interpreter, never in the launcher.

Executed as ``python /abs/path/convert_worker.py`` with one JSON spec on stdin (built by
kt_launch.backend.convert); writes exactly one JSON object to the original stdout, and one
``KT-CONVERT-PROGRESS {json}`` line per layer to stderr (the launcher turns those into its progress line).

Why it is built like this:
  - kt-kernel's own quantizer does the work: ``KTMoEWrapper(..., cpu_save=True)`` +
    ``load_weights_from_tensors`` quantizes one MoE layer and writes ``<weight_path>/_layer_L/_numa_N/*.kt``
    (kt_kernel/utils/amx.py). Nothing here quantizes by hand.
  - Read at the disk's speed: each layer's expert bytes are read with large positioned reads (preadv) straight
    into the stacked tensors kt-kernel takes (no mmap, no per-tensor copy), on a reader thread that reads layer
    L+1 while kt-kernel quantizes L and a finisher thread hashes and records L-1; at most IN_FLIGHT (3) source
    layers exist at once, which is the RAM bound the launcher prints. The answer has each stage's seconds.
    A read-ahead process (convert_readahead.py) keeps the disk reading from before the imports to the last layer,
    whatever holds this process's GIL; kt-kernel's GIL-holding sync is waited out with the GIL free (PatientSync).
  - kt-kernel writes into ``<out>/.kt-convert-tmp``; a finished layer dir is renamed into ``<out>`` and only
    then recorded in the manifest (size + sha256 per file), so an interrupted run never counts a half layer.
  - A rerun skips a layer whose files match the manifest (nothing is rewritten) and redoes one that does not.
    Each layer's manifest entry records its source (the launcher's `sources`: the shards' names, sizes and mtimes
    and a hash of its expert tensors' header entries; plus `data_sha256`, a hash list of the bytes read here: sha256 over each tensor's name and sha256); the
    launcher lists in `redo` the finished layers of another source, which are converted again, never skipped.
  - The manifest is read bounded (a regular file, at most MANIFEST_MAX bytes, nesting checked): --out is the user's.
  - FP8 E4M3 experts with 128x128 ``weight_scale_inv`` blocks are dequantized per block to BF16 first;
    compressed-tensors pack-quantized INT4 (Kimi-K2: ``weight_packed``, ``weight_scale``, ``weight_shape``, the group
    size from config.json) per group.
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

READAHEAD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "convert_readahead.py")


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


def _hashes(paths, threads=16):
    """sha256 of many files at once: hashlib releases the GIL, and one thread would make hashing a third of
    the conversion's time (measured on the AMX host). During a conversion the finisher uses fewer (FINISH_THREADS):
    the reader, the source hashes and kt-kernel's threads need the cores."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(threads, os.cpu_count() or 1))) as pool:
        return list(pool.map(sha256, paths))


def _walk(layer_dir):
    found = {}
    for root, _dirs, files in os.walk(layer_dir):
        for name in files:
            p = os.path.join(root, name)
            found[os.path.relpath(p, layer_dir)] = p
    return dict(sorted(found.items()))


FINISH_THREADS = 4


def layer_files(layer_dir, threads=16):
    """{relative path: {size, sha256}} of every file under a `_layer_L` dir."""
    found = _walk(layer_dir)
    digests = _hashes(list(found.values()), threads)
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
#
# Each layer is read with a few large positioned reads (os.preadv: many buffers per system call) straight into the
# stacked [E, I, H] / [E, H, I] tensors kt-kernel takes: a BF16 expert's bytes land where the quantizer reads them,
# with no per-tensor object, copy or mmap (an mmap'd shard counts in RSS as file-backed pages; measured on the AMX
# host: peaks 4-7x the promise). Quantized sources (FP8 blocks, compressed-tensors packed INT4) and F16/F32 are read
# the same way into one staging buffer of the layer's raw bytes, then dequantized tensor by tensor into the stack.

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "I32": 4, "U8": 1, "I8": 1, "I64": 8}
IOV_MAX = 512  # buffers per preadv call (Linux allows 1024)
READ_MAX = 256 << 20  # bytes per call: large reads, each a bounded request
IN_FLIGHT = 3  # source layers held at once: one quantized, one ready, one being read (convert.py LAYERS_IN_FLIGHT)
ALIGN = 64  # staging slots start aligned, so a slot can be viewed as int32/float32


def tensor_table(model_path):
    """{tensor name: (shard file, start, end, dtype, shape)} of the routed experts, absolute byte ranges from the
    safetensors headers (the index json may be stale or absent)."""
    table = {}
    for f in sorted(glob.glob(os.path.join(glob.escape(model_path), "*.safetensors"))):
        with open(f, "rb") as h:
            n = int.from_bytes(h.read(8), "little")
            if n > HEADER_MAX:  # the launcher checked the headers before; a shard swapped since is not read whole
                raise ConvertError("weights", f"{f}: a safetensors header of {n} bytes (more than {HEADER_MAX})")
            header = json.loads(h.read(n))
        for k, v in header.items():
            if ".mlp.experts." in k and isinstance(v, dict):
                a, b = v["data_offsets"]
                table[k] = (f, 8 + n + a, 8 + n + b, v.get("dtype"), tuple(v.get("shape") or ()))
    return table


def _prefix(table, layer):
    """(tensor name prefix of the layer's experts, 'dense' | 'packed')."""
    for p in (f"model.layers.{layer}.mlp.experts.", f"language_model.model.layers.{layer}.mlp.experts.",
              f"model.language_model.layers.{layer}.mlp.experts."):
        if p + "0.gate_proj.weight" in table:
            return p, "dense"
        if p + "0.gate_proj.weight_packed" in table:
            return p, "packed"
    raise ConvertError("weights", f"no routed-expert tensors for layer {layer} (model.layers.{layer}.mlp.experts.0."
                                  "gate_proj.weight or .weight_packed) in the model's safetensors")


def packed_group_size(model_path):
    """The INT4 group size of a compressed-tensors pack-quantized checkpoint, from config.json's quantization_config
    (Kimi-K2: num_bits 4, symmetric, strategy group, group_size 32). Asymmetric (zero points) is not read."""
    path = os.path.join(model_path, "config.json")
    try:
        if os.path.getsize(path) > (16 << 20):
            raise ConvertError("weights", f"{path}: larger than a config.json may be")
        with open(path, "rb") as f:
            cfg = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise ConvertError("weights", f"{path}: cannot read it ({e})")
    qc = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config") or {}
    why = None
    if qc.get("quant_method") != "compressed-tensors" or qc.get("format") not in ("pack-quantized", None):
        why = f"quant_method {qc.get('quant_method')!r}, format {qc.get('format')!r}"
    for g in (qc.get("config_groups") or {}).values():
        w = (g or {}).get("weights") or {}
        if w.get("num_bits") == 4 and w.get("type", "int") == "int" and w.get("strategy") == "group":
            if not w.get("symmetric", True):
                why = "asymmetric INT4 (zero points)"
            elif not why and isinstance(w.get("group_size"), int) and w["group_size"] > 0:
                return w["group_size"]
    raise ConvertError("weights", f"{path}: the experts are packed INT4 (weight_packed), but quantization_config is "
                                  f"not symmetric compressed-tensors pack-quantized 4-bit groups ({why or 'no group'})")


def dequant_fp8(torch, q, scale_inv):
    """FP8 E4M3 with one float32 scale per 128x128 block -> bf16 (w = q * scale[i//128, j//128])."""
    rows, cols = q.shape
    s = scale_inv.float().repeat_interleave(BLOCK, 0)[:rows].repeat_interleave(BLOCK, 1)[:, :cols]
    return (q.float() * s).to(torch.bfloat16)


def dequant_int4_packed(torch, packed, scale, shape, group):
    """compressed-tensors pack-quantized INT4 -> bf16. Eight 4-bit values per int32 along a row, the first value in
    the lowest nibble, each stored as q + 8 (compressed_tensors pack_to_int32 / unpack_from_int32); symmetric:
    w[r, c] = (nibble - 8) * scale[r, c // group]."""
    rows, cols = shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    q = ((packed.view(torch.int32).unsqueeze(-1) >> shifts) & 0xF).reshape(rows, -1)[:, :cols]
    s = scale.float().repeat_interleave(group, 1)[:, :cols]
    return ((q - 8).float() * s).to(torch.bfloat16)


def _preadv_all(fd, bufs, offset):
    """Fill `bufs` (writable memoryviews, in file order) from `offset`: few large preadv calls, short reads resumed."""
    pending = [b for b in bufs if len(b)]
    while pending:
        batch, size = [], 0
        for b in pending[:IOV_MAX]:
            batch.append(b)
            size += len(b)
            if size >= READ_MAX:
                break
        got = os.preadv(fd, batch, offset) if hasattr(os, "preadv") else os.readv(fd, batch) if os.lseek(
            fd, offset, os.SEEK_SET) == offset else 0
        if got <= 0:
            raise ConvertError("weights", f"a shard ended before the bytes its header promises (at byte {offset})")
        offset += got
        while got:
            if got >= len(pending[0]):
                got -= len(pending.pop(0))
            else:
                pending[0] = pending[0][got:]
                got = 0


def _read_ranges(items):
    """items: [(file, start, memoryview)]; every range read, file by file in offset order, touching ranges merged
    into one request (one large sequential read where the shard lays a layer's experts side by side)."""
    by_file = {}
    for f, start, buf in items:
        by_file.setdefault(f, []).append((start, buf))
    for f, ranges in by_file.items():
        ranges.sort(key=lambda r: r[0])
        fd = os.open(f, os.O_RDONLY)
        try:
            lo, hi = ranges[0][0], ranges[-1][0] + len(ranges[-1][1])
            if hasattr(os, "posix_fadvise"):  # a hint: the kernel reads ahead of us, in large requests
                for advice in (os.POSIX_FADV_SEQUENTIAL, os.POSIX_FADV_WILLNEED):
                    try:
                        os.posix_fadvise(fd, lo, hi - lo, advice)
                    except OSError:
                        pass
            run, run_start, run_end = [], None, None
            for start, buf in ranges:
                if run and start != run_end:
                    _preadv_all(fd, run, run_start)
                    run = []
                if not run:
                    run_start = start
                run.append(buf)
                run_end = start + len(buf)
            if run:
                _preadv_all(fd, run, run_start)
        finally:
            os.close(fd)


HASH_THREADS = 4  # one sha256 runs at ~1.2 GB/s on the AMX host, slower than its disk (1.5 GB/s): tensors in parallel


def feed_digest(digest, pairs, pool=None):
    """data_sha256's definition: the digest is fed, tensor by tensor in the read order, the tensor's name, a NUL and
    the sha256 of its bytes (a hash list: the tensors are hashed in parallel on `pool`, hashlib releases the GIL)."""
    bufs = [buf for _name, buf in pairs]
    digests = pool.map(_sha256_digest, bufs) if pool is not None else map(_sha256_digest, bufs)
    for (name, _buf), d in zip(pairs, digests):
        digest.update(name.encode() + b"\0" + d)
    return digest


def _sha256_digest(buf):
    return hashlib.sha256(buf).digest()


def read_layer(torch, table, layer, spec, digest=None, group=None, into=None):
    """(gate [E,I,H], up [E,I,H], down [E,H,I]) in bf16, and the source bytes read; `digest` (a hashlib object) is fed
    each tensor's name and bytes in a fixed order (expert, gate/up/down, weight then its scales): data_sha256; a list
    instead gets the (name, bytes) pairs in that order, to hash elsewhere. `into`: the (gate, up, down) tensors of an
    earlier layer to read into (the Reader's pool: memory already faulted in is reused, not allocated again)."""
    E, H, I = spec["num_experts"], spec["hidden_size"], spec["moe_intermediate_size"]
    p, fmt = _prefix(table, layer)
    shapes = {"gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
    out = (dict(zip(PROJS, into)) if into is not None else
           {proj: torch.empty((E, *shapes[proj]), dtype=torch.bfloat16) for proj in PROJS})

    def entry(name):
        if name not in table:
            raise ConvertError("weights", f"tensor {name} is missing from the model's safetensors")
        f, a, b, dtype, shape = table[name]
        if dtype not in DTYPE_BYTES:
            raise ConvertError("weights", f"{name} is {dtype}: convert reads BF16, F16, F32, FP8 E4M3 (128x128 "
                                          "blocks) or compressed-tensors packed INT4 experts")
        return f, a, b, dtype, shape

    plan, staged_bytes = [], 0  # plan: (name, file, start, nbytes, dtype, shape, "direct" | staging offset, e, proj)
    for e in range(E):
        for proj in PROJS:
            names = ([f"{p}{e}.{proj}.weight_packed", f"{p}{e}.{proj}.weight_scale", f"{p}{e}.{proj}.weight_shape"]
                     if fmt == "packed" else [f"{p}{e}.{proj}.weight"])
            if fmt == "dense" and table.get(names[0], (0,) * 4)[3] == "F8_E4M3":
                names.append(f"{p}{e}.{proj}.weight_scale_inv")
            for k, name in enumerate(names):
                f, a, b, dtype, shape = entry(name)
                if k == 0 and fmt == "dense" and tuple(shape) != shapes[proj]:
                    raise ConvertError("weights", f"{name} has shape {list(shape)}, the config says "
                                                  f"{list(shapes[proj])}")
                if fmt == "dense" and k == 0 and dtype == "BF16":
                    where = "direct"
                else:
                    where = staged_bytes
                    staged_bytes += -(-(b - a) // ALIGN) * ALIGN
                plan.append((name, f, a, b - a, dtype, shape, where, e, proj, k))
    staging = torch.empty(staged_bytes, dtype=torch.uint8) if staged_bytes else None
    items, slot = [], {}
    for name, f, a, n, dtype, shape, where, e, proj, _k in plan:
        if where == "direct":
            buf = memoryview(out[proj][e].view(torch.uint8).numpy()).cast("B")
        else:
            buf = memoryview(staging[where:where + n].numpy()).cast("B")
            slot[name] = staging[where:where + n]
        if len(buf) != n:
            raise ConvertError("weights", f"{name}: {n} bytes in the shard, {len(buf)} expected from its shape")
        items.append((f, a, buf))
    _read_ranges(items)
    if isinstance(digest, list):  # hashed later, on another thread (the Reader): the buffers are kept alive by it
        digest.extend((name, buf) for (name, *_rest), (_f, _a, buf) in zip(plan, items))
    elif digest is not None:
        feed_digest(digest, [(name, buf) for (name, *_rest), (_f, _a, buf) in zip(plan, items)])
    tdt = {"F16": torch.float16, "F32": torch.float32, "F8_E4M3": torch.float8_e4m3fn, "I32": torch.int32,
           "U8": torch.uint8, "I8": torch.int8, "BF16": torch.bfloat16, "I64": torch.int64}

    def tensor(name, dtype, shape):
        return slot[name].view(tdt[dtype]).reshape(shape)

    g = (group or packed_group_size(spec["model_path"])) if fmt == "packed" else None
    rows = {}
    for name, _f, _a, _n, dtype, shape, where, e, proj, k in plan:
        rows.setdefault((e, proj), []).append((name, dtype, shape))
    for (e, proj), parts in rows.items():
        name, dtype, shape = parts[0]
        if fmt == "packed":
            (_, sdt, sshape), (_, hdt, hshape) = parts[1], parts[2]
            want = list(shapes[proj])
            got = tensor(parts[2][0], hdt, hshape).tolist()
            if got != want:
                raise ConvertError("weights", f"{parts[2][0]} is {got}, the config says {want}")
            words = -(-want[1] // 8)  # eight 4-bit values an int32 (four bytes as U8)
            if (dtype not in ("I32", "U8") or tuple(shape) != (want[0], words * (4 if dtype == "U8" else 1))
                    or tuple(sshape) != (want[0], -(-want[1] // g))):
                raise ConvertError("weights", f"{name} {dtype}{list(shape)} / {parts[1][0]} {list(sshape)}: not packed "
                                              f"INT4 of {want} in groups of {g}")
            out[proj][e].copy_(dequant_int4_packed(torch, tensor(name, dtype, shape), tensor(parts[1][0], sdt, sshape),
                                                   want, g))
        elif dtype == "F8_E4M3":
            out[proj][e].copy_(dequant_fp8(torch, tensor(name, dtype, shape), tensor(parts[1][0], parts[1][1],
                                                                                    parts[1][2])))
        elif dtype != "BF16":
            if dtype not in ("F16", "F32"):
                raise ConvertError("weights", f"{name} is {dtype}: convert reads BF16 or FP8 E4M3 experts")
            out[proj][e].copy_(tensor(name, dtype, shape).to(torch.bfloat16))
    return out["gate_proj"], out["up_proj"], out["down_proj"], sum(r[3] for r in plan)


class Reader:
    """Reads the layers to convert, in order, on one background thread while kt-kernel quantizes, so the disk and the
    quantizer overlap; a second thread hashes what was read (data_sha256) while the next layer is read. At most
    IN_FLIGHT source layers exist at once: a slot is taken before a layer's buffers are allocated and given back
    (`release`) once the quantizer is done with it and its bytes are hashed. That is the RAM bound the launcher
    prints (convert.py ConvertPlan.ram_bytes)."""

    def __init__(self, torch, table, spec, order, group=None, readahead=None):
        import queue
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.torch, self.table, self.spec, self.order, self.group = torch, table, spec, list(order), group
        self.readahead = readahead
        self.slots = threading.Semaphore(IN_FLIGHT)
        self.pool = []  # (gate, up, down) stacks given back by `release`: at most IN_FLIGHT are ever allocated. Fresh
        # memory costs a page fault per 4 KiB on first touch (0.35-0.43 GB/s on the 2-vCPU VM), more than the disk.
        self.ready = queue.Queue()
        self.stop = False
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kt-convert-hash")
        self.tensor_hasher = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="kt-convert-sha")
        self.thread = threading.Thread(target=self._run, name="kt-convert-reader", daemon=True)
        self.thread.start()

    def _hash(self, pairs):
        t0 = time.perf_counter()
        hexd = feed_digest(hashlib.sha256(), pairs, self.tensor_hasher).hexdigest()
        return hexd, time.perf_counter() - t0

    def _run(self):
        for layer in self.order:
            if self.readahead is not None:
                self.readahead.reading(layer)
            self.slots.acquire()
            if self.stop:
                return
            try:
                t0 = time.perf_counter()
                pairs = []
                into = self.pool.pop() if self.pool else None
                gate, up, down, nbytes = read_layer(self.torch, self.table, layer, self.spec, pairs, self.group, into)
                read_s = time.perf_counter() - t0
                self.ready.put((layer, (gate, up, down, nbytes, self.hasher.submit(self._hash, pairs), read_s), None))
                del gate, up, down, pairs
            except BaseException as e:  # noqa: BLE001  (handed to the consumer, raised there)
                self.ready.put((layer, None, e))
                return

    def take(self, layer):
        """(gate, up, down, bytes, future of (sha256 of the bytes, seconds hashing), seconds the read took, seconds
        waited for it)."""
        t0 = time.perf_counter()
        got_layer, got, exc = self.ready.get()
        wait_s = time.perf_counter() - t0
        if exc is not None:
            raise exc
        if got_layer != layer:
            raise ConvertError("error", f"the reader handed layer {got_layer} for layer {layer}")
        return (*got, wait_s)

    def release(self, stacks=None):
        """A layer is done with (quantized and hashed); `stacks`, its (gate, up, down), are read into again."""
        if stacks is not None:
            self.pool.append(stacks)
        self.slots.release()

    def close(self):
        self.stop = True
        self.slots.release()
        self.hasher.shutdown(wait=False)
        self.tensor_hasher.shutdown(wait=False)


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


def quantize_layer(torch, spec, layer, reader, refs=None, patient=None):
    """Take the layer from the reader and have kt-kernel quantize it into <out>/.kt-convert-tmp/_layer_L; the
    finishing (hash the files, rename, manifest) is `finish_layer`'s, on another thread."""
    tmp = os.path.join(spec["out"], TMP_DIR)
    t0 = time.perf_counter()
    gate, up, down, nbytes, hashed, t_read, t_wait = reader.take(layer)
    t_q0 = time.perf_counter()
    staged = os.path.join(tmp, f"_layer_{layer}")
    shutil.rmtree(staged, ignore_errors=True)
    w = wrapper(torch, spec, layer, tmp, cpu_save=True)
    if patient is not None:
        patient.wrap(w, staged)
    w.load_weights_from_tensors(gate, up, down, torch.arange(spec["num_experts"], dtype=torch.int64))
    del w  # kt-kernel holds no reference to the stacks after this: they go back to the reader's pool
    t_quant = time.perf_counter() - t_q0
    if patient is not None:
        patient.learn(staged, t_quant)
    row = {"layer": layer, "skipped": False, "bytes_in": nbytes, "read_s": round(t_read, 4),
           "wait_s": round(t_wait, 4), "quant_s": round(t_quant, 4), "t0": t0, "hashed": hashed,
           "stacks": (gate, up, down)}
    if refs is not None:  # a layer the read-back check compares: its reference from the stacks read for it
        refs[layer] = reference(torch, spec, gate, up, down)
    return row


def finish_layer(spec, row, manifest, reader):
    """The quantized layer's files hashed, renamed into <out> and recorded (in layer order: one finisher thread)."""
    out, layer = spec["out"], row["layer"]
    t0 = time.perf_counter()
    stacks = row.pop("stacks")
    try:
        data_sha256, hash_s = row.pop("hashed").result()
    finally:
        reader.release(stacks)  # quantized and hashed: the reader may read the next layer into these stacks
        del stacks
    staged = os.path.join(out, TMP_DIR, f"_layer_{layer}")
    if not os.path.isdir(staged):
        raise ConvertError("error", f"kt-kernel wrote no {staged} for {spec['method']} layer {layer}")
    files = layer_files(staged, FINISH_THREADS)
    final = os.path.join(out, f"_layer_{layer}")
    if os.path.lexists(final):  # a stale or mismatching layer of this conversion: replaced whole
        trash = os.path.join(out, TMP_DIR, f"_old_layer_{layer}")
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(staged, final)
    source = dict((spec.get("sources") or {}).get(str(layer)) or {}, data_sha256=data_sha256,
                  bytes_read=row["bytes_in"])
    manifest["layers"][str(layer)] = {"files": files, "source": source}
    write_manifest(out, manifest)
    now = time.perf_counter()
    row.update(bytes_out=sum(f["size"] for f in files.values()), hash_s=round(hash_s, 4),
               finish_s=round(now - t0, 4), seconds=round(now - row.pop("t0"), 4))
    return row


def reference(torch, spec, gate, up, down):
    """The check's input (16 tokens, seeded) and a float32 torch MoE's answer from the source stacks."""
    gen = torch.Generator().manual_seed(int(spec.get("seed", 1234)))
    qlen = min(16, int(spec["chunked_prefill_size"]))
    x = torch.randn((qlen, spec["hidden_size"]), generator=gen).to(torch.bfloat16)
    ids, wts = pw._routing(torch, qlen, spec, gen)
    return x, ids, wts, pw._reference(torch, x, ids, wts, gate, up, down)


def verify_layer(torch, spec, layer, table, ref=None):
    """Read the converted layer back with kt-kernel (load_weights) and compare one forward with torch. `ref`: the
    reference computed while the layer's source stacks were in memory (the conversion's own read); without it (a
    layer skipped as already converted) the source is read again."""
    if ref is None:
        gate, up, down, _ = read_layer(torch, table, layer, spec)
        ref = reference(torch, spec, gate, up, down)
        del gate, up, down
    x, ids, wts, ref = ref
    w = wrapper(torch, spec, layer, spec["out"], cpu_save=False)
    w.load_weights(torch.arange(spec["num_experts"], dtype=torch.int64))
    if torch.cuda.is_available():  # as SGLang calls it: GPU tensors on a CUDA stream (the probe does the same)
        stream = torch.cuda.current_stream().cuda_stream
        out = w.forward(x.cuda(), ids.cuda(), wts.cuda(), stream)
        torch.cuda.synchronize()
    else:
        os.environ["KT_FORCE_SYNC_SUBMIT"] = "1"  # no CUDA stream: kt-kernel's synchronous path
        out = w.forward(x, ids, wts, 0)
    out = out.detach().to("cpu", copy=True)
    del w
    err = pw._rel_err(torch, out, ref)
    tol = float(spec.get("tolerance") or pw.TOLERANCE[pw.method_family(spec["method"])])
    return {"layer": layer, "rel_err": err, "tolerance": tol, "passed": err <= tol}


def peak_rss():
    """The process's peak resident set as the OS counts it (anonymous and file-backed pages), bytes: VmHWM of this
    process image (ru_maxrss would carry the parent's high-water mark across fork and exec)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def layer_steps(table, layer):
    """(file, offset, length) of a layer's routed-expert bytes, shard by shard, in READ_MAX steps."""
    p, _fmt = _prefix(table, layer)
    ranges = {}
    for name, (f, a, b, _dt, _shape) in table.items():
        if name.startswith(p):
            lo, hi = ranges.get(f, (a, b))
            ranges[f] = (min(lo, a), max(hi, b))
    return [(f, off, min(READ_MAX, hi - off)) for f, (lo, hi) in sorted(ranges.items(), key=lambda kv: (kv[1][0], kv[0]))
            for off in range(lo, hi, READ_MAX)]


class Readahead:
    """The read-ahead process (convert_readahead.py, the sibling script) over the layers this process converts, started
    before torch and kt-kernel are imported: it reads their expert bytes into the page cache at the disk's speed, at
    most `ahead` bytes beyond the layer the reader has begun, while the imports and kt-kernel's GIL-holding sync stop
    every thread of this process. In this process's group, so a stopped conversion stops it too; its stdin closing
    (this process ending) ends it."""

    def __init__(self, table, layers, ahead):
        import subprocess

        self.begins, steps, total = {}, [], 0
        for layer in layers:
            self.begins[layer] = total
            for f, off, n in layer_steps(table, layer):
                steps.append([f, off, n])
                total += n
        self.proc = subprocess.Popen([sys.executable, READAHEAD_PATH], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent())
        self._send(json.dumps({"steps": steps, "ahead": int(ahead)}))

    def _send(self, line):
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # it ended (or was never needed): only a helper
            pass

    def reading(self, layer):
        """The reader begins `layer`: the read-ahead may go `ahead` bytes past its start."""
        if layer in self.begins:
            self._send(str(self.begins[layer]))

    def close(self):
        """Stopped at once: what it read ahead and nobody will take is only page cache."""
        self.proc.kill()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass


def _die_with_parent():
    """A preexec_fn: the read-ahead gets SIGKILL when this worker dies (Linux), so a worker killed alone (the launcher's
    own death signal) leaves nothing reading on. kt_launch/facts/worker.py die_with_parent's rule, restated here: this
    script imports nothing of kt_launch. Called from the main thread (the death signal follows the forking thread)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup():
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return setup


def start_readahead(spec):
    """(the tensor table, the Readahead or None): the layers this run will likely convert (those the manifest does not
    record) handed to the read-ahead before anything slow starts. Anything odd is left to the checks that follow."""
    try:
        table = tensor_table(spec["model_path"])
    except Exception:  # noqa: BLE001
        return None, None
    ahead = int(spec.get("readahead_bytes") or 0)
    if ahead <= 0 or not hasattr(os, "preadv"):
        return table, None
    try:
        recorded = (read_manifest(os.path.join(spec["out"], MANIFEST)) or {}).get("layers") or {}
        redo = {int(x) for x in spec.get("redo") or ()}
        todo = [int(x) for x in spec["layers"] if str(x) not in recorded or int(x) in redo]
        return table, Readahead(table, todo, ahead) if todo else None
    except Exception:  # noqa: BLE001
        return table, None


class PatientSync:
    """kt-kernel 0.7.2 binds ``CPUInfer.sync`` without releasing the GIL: while its threads quantize a layer (0.25 s
    a DeepSeek-V2-Lite layer on the AMX host), no other thread of this process runs; the reader, the source hash
    and the finisher stopped for every layer (measured here: a ticking thread got 2 turns in 0.22 s). So the wrapper's
    ``cpu_infer`` is wrapped for the call: its ``sync`` first sleeps (the GIL free) until the layer's files are all
    written, which kt-kernel does expert by expert as it quantizes, then calls the real sync, which then waits only
    for the last file (measured: 0.03 of 0.22 s). How many files a layer has and how long one takes is learned from
    the first layer, converted with the plain sync; the wait is bounded by twice that time, then the real sync
    waits as before. Nothing in kt-kernel changes: the same calls, in the same order."""

    POLL = 0.004

    def __init__(self):
        self.files, self.seconds = None, None

    def wrap(self, w, staged):
        """Have `w` (a KTMoEWrapper) wait patiently for the layer staged in `staged`, once a layer was learned."""
        if self.files and getattr(w, "cpu_infer", None) is not None:
            w.cpu_infer = _Patient(w.cpu_infer, staged, self.files, 2 * self.seconds + 1.0, self.POLL)

    def learn(self, staged, seconds):
        if self.files is None:
            self.files, self.seconds = _count_files(staged), seconds


class _Patient:
    def __init__(self, inner, staged, files, limit, poll):
        self._inner, self._staged, self._files, self._limit, self._poll = inner, staged, files, limit, poll

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def sync(self, *args, **kwargs):
        end = time.perf_counter() + self._limit
        while _count_files(self._staged) < self._files and time.perf_counter() < end:
            time.sleep(self._poll)
        return self._inner.sync(*args, **kwargs)


def _count_files(path):
    n = 0
    for _root, _dirs, files in os.walk(path):
        n += len(files)
    return n


def run_chunked(spec, result):
    """kt-kernel 0.7.2 frees no quantized layer before its process ends (AMX_MOE_BASE's buffers): the layers are
    converted by a fresh process of this script each `layers_per_process` layers, one after another, so the RAM stays
    within the bound the launcher printed. This process imports neither torch nor kt-kernel; it merges the answers.
    The children's progress lines go straight to the shared stderr; a Ctrl+C reaches them through the process group."""
    import subprocess

    t_start = time.perf_counter()
    layers = [int(x) for x in spec["layers"]]
    k = max(1, int(spec["layers_per_process"]))
    checks = sorted({layers[0], layers[-1]}) if spec.get("verify", True) and layers else []
    answers = []
    for lo in range(0, len(layers), k):
        part = layers[lo:lo + k]
        child = dict(spec, layers=part, layers_per_process=0, verify_layers=[x for x in checks if x in part],
                     progress_offset=lo, progress_total=len(layers))
        p = subprocess.run([sys.executable, os.path.abspath(__file__)], input=json.dumps(child),
                           stdout=subprocess.PIPE, text=True)
        try:
            ans = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ConvertError("error", f"the worker process for layers {part[0]}-{part[-1]} ended (exit "
                                        f"{p.returncode}) without an answer")
        answers.append(ans)
        for key in ("cpu_variant", "kt_kernel_version", "torch_version", "pin_shim", "rss_at_start"):
            result.setdefault(key, ans.get(key))
        result["started"] = bool(result.get("started") or ans.get("started"))
        if not ans.get("ok"):
            if ans.get("traceback"):
                result["traceback"] = ans["traceback"]
            raise ConvertError(ans.get("error_kind") or "error", ans.get("error") or "a worker process failed")
    keys = ("read_s", "hash_s", "quant_s", "finish_s", "wait_s")
    stages = {key: round(sum(float(a.get(key) or 0) for a in answers), 4) for key in keys}
    wall = round(sum(float((a.get("stages") or {}).get("wall_s") or 0) for a in answers), 4)
    result.update(stages)
    result["stages"] = {**stages, "wall_s": wall, "overlap_s": round(max(0.0, sum(stages.values()) - stages["wait_s"]
                                                                          - wall), 4), "in_flight": IN_FLIGHT}
    result["layers"] = [r for a in answers for r in a.get("layers") or []]
    result["bytes_in"] = sum(int(a.get("bytes_in") or 0) for a in answers)
    result["bytes_out"] = sum(int(a.get("bytes_out") or 0) for a in answers)
    result["verify"] = [v for a in answers for v in a.get("verify") or []]
    for key in ("import_s", "verify_s"):
        result[key] = round(sum(float(a.get(key) or 0) for a in answers), 4)
    for key in ("peak_rss", "peak_rss_with_verify"):
        result[key] = max(int(a.get(key) or 0) for a in answers)
    result["processes"], result["layers_per_process"] = len(answers), k
    result["seconds"] = round(time.perf_counter() - t_start, 4)
    result["convert_s"] = round(result["seconds"] - result["verify_s"], 4)


def run(spec, result):
    if int(spec.get("layers_per_process") or 0) and len(spec.get("layers") or ()) > int(spec["layers_per_process"]):
        return run_chunked(spec, result)
    t_start = time.perf_counter()
    table, readahead = start_readahead(spec)
    try:
        convert(spec, result, t_start, table, readahead)
    finally:
        if readahead is not None:
            readahead.close()


def convert(spec, result, t_start, table, readahead):
    try:
        import torch
        import kt_kernel
    except ImportError as e:
        raise ConvertError("kt_kernel_missing", f"torch/kt_kernel are not importable in {sys.executable}: {e}")
    result["import_s"] = round(time.perf_counter() - t_start, 4)
    result["cpu_variant"] = getattr(kt_kernel, "__cpu_variant__", "unknown")
    result["kt_kernel_version"] = getattr(kt_kernel, "__version__", "unknown")
    result["torch_version"] = torch.__version__
    # The source's format is checked before anything is written (the launcher says so: nothing was written).
    table = table or tensor_table(spec["model_path"])
    layers = [int(x) for x in spec["layers"]]
    group = None
    for layer in layers:
        if _prefix(table, layer)[1] == "packed":
            group = packed_group_size(spec["model_path"])
            break
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
    result["rss_at_start"] = peak_rss()
    out = spec["out"]
    result["started"] = True  # from here on the output dir may be written
    os.makedirs(out, exist_ok=True)
    manifest = load_manifest(out, spec)
    shutil.rmtree(os.path.join(out, TMP_DIR), ignore_errors=True)  # an interrupted run's half layer
    os.makedirs(os.path.join(out, TMP_DIR))
    done, checked = [], {}
    redo = {int(x) for x in spec.get("redo") or ()}  # finished from another source: converted again, never skipped
    for layer in layers:  # which layers are finished: their files match the manifest (hashed, not trusted)
        t0 = time.perf_counter()
        ok = layer not in redo and layer_matches(out, layer, (manifest["layers"].get(str(layer)) or {}).get("files"))
        checked[layer] = (ok, time.perf_counter() - t0)
    todo = [layer for layer in layers if not checked[layer][0]]
    from concurrent.futures import ThreadPoolExecutor

    verify = bool(spec.get("verify", True)) and bool(layers)
    checks = sorted({layers[0], layers[-1]}) if verify else []
    if verify and "verify_layers" in spec:  # one process of a chunked run: the checked layers that fall in its part
        checks = sorted({int(x) for x in spec["verify_layers"]} & set(layers))
        verify = bool(checks)
    refs = {}  # layer -> the read-back check's input and reference, computed from the stacks the conversion read
    t_conv = time.perf_counter()
    reader = Reader(torch, table, spec, todo, group, readahead)
    patient = PatientSync()
    finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kt-convert-finish")
    pending = []  # (index, future of the finished row): layer L is finished while L+1 is quantized

    def emit(i, row):
        done.append(row)
        sys.stderr.write(PROGRESS + json.dumps({"index": int(spec.get("progress_offset") or 0) + i + 1,
                                                "total": int(spec.get("progress_total") or len(layers)), **row}) + "\n")
        sys.stderr.flush()

    try:
        for i, layer in enumerate(layers):
            if checked[layer][0]:
                while pending:
                    emit(pending[0][0], pending.pop(0)[1].result())
                files = manifest["layers"][str(layer)]["files"]
                emit(i, {"layer": layer, "skipped": True, "bytes_in": 0,
                         "bytes_out": sum(f["size"] for f in files.values()), "seconds": round(checked[layer][1], 4)})
                continue
            manifest["layers"].pop(str(layer), None)
            row = quantize_layer(torch, spec, layer, reader, refs if layer in checks else None, patient)
            row["other_source"] = layer in redo
            while pending:  # L-1 was finished (hashed, renamed, recorded) while L was quantized
                emit(pending[0][0], pending.pop(0)[1].result())
            pending.append((i, finisher.submit(finish_layer, spec, row, manifest, reader)))
        while pending:
            emit(pending[0][0], pending.pop(0)[1].result())
    finally:
        reader.close()
        finisher.shutdown(wait=True)
        reader.pool.clear()  # the stacks go before the read-back check reads its two layers
    wall = time.perf_counter() - t_conv
    shutil.rmtree(os.path.join(out, TMP_DIR), ignore_errors=True)
    result["layers"] = done
    result["bytes_in"] = sum(r["bytes_in"] for r in done)
    result["bytes_out"] = sum(r["bytes_out"] for r in done)
    stages = {k: round(sum(r.get(k, 0.0) for r in done), 4) for k in ("read_s", "hash_s", "quant_s", "finish_s",
                                                                      "wait_s")}
    result.update(stages)
    busy = stages["read_s"] + stages["hash_s"] + stages["quant_s"] + stages["finish_s"]
    result["stages"] = {**stages, "wall_s": round(wall, 4), "overlap_s": round(max(0.0, busy - wall), 4),
                        "in_flight": IN_FLIGHT}
    result["convert_s"] = round(time.perf_counter() - t_start, 4)
    result["peak_rss"] = peak_rss()
    if verify:
        t_v = time.perf_counter()
        result["verify"] = [verify_layer(torch, spec, layer, table, refs.pop(layer, None)) for layer in checks]
        result["verify_s"] = round(time.perf_counter() - t_v, 4)
        bad = [v for v in result["verify"] if not v["passed"]]
        if bad:
            raise ConvertError("tolerance", "; ".join(
                f"layer {v['layer']}: kt-kernel's read-back differs from the source by {v['rel_err']:.3g} "
                f"(tolerance {v['tolerance']})" for v in bad))
    result["peak_rss_with_verify"] = peak_rss()
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
              "python": sys.executable, "started": False}
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
