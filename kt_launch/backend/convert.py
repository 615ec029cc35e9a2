"""Launcher side of `kt-launch convert`: what to convert, where, whether it is safe, and the worker run.

The plan says the method (kt.method, or the SFT method's base in MoE-LoRA mode), the NUMA partition layout
(kt.threadpool_count), the MoE layers and their shape; this module turns that into one spec for
`convert_worker.py`, which runs in runtime.python and does the conversion with kt-kernel's own quantizer.
The launcher never imports torch or kt_kernel.

Refusals come before anything is written (exit 3): an output inside or equal to model.path (seed bug 5), an
output dir holding files that are not this conversion's, too little free disk for the estimate. A method the
loaded kt-kernel variant lacks is refused by the worker before it creates any file (KT-E402).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from kt_launch.core.findings import Finding, error
from kt_launch.facts import worker as _worker
from kt_launch.facts.reader import SAFETENSORS_HEADER, Kind, ReadError, parse_json, read_json
from kt_launch.resolve.methods import cpu_format

WORKER_PATH = Path(__file__).with_name("convert_worker.py").resolve()
MANIFEST = "kt-convert-manifest.json"  # the worker's names (convert_worker.py MANIFEST, TMP_DIR)
TMP_DIR = ".kt-convert-tmp"
PROGRESS = "KT-CONVERT-PROGRESS "
METHODS = {"AMXINT8": 8, "AMXINT4": 4}  # what kt-kernel 0.7.2's online quantizer writes, and its bits
CHUNK = 64  # kt-kernel's buffers are sized by this; conversion runs no prefill, verification 16 tokens
_LAYER_DIR = re.compile(r"_layer_\d+\Z")
_OURS = {MANIFEST, MANIFEST + ".tmp", TMP_DIR}
# The manifest is ours, but --out is the user's: read through the bounded reader (a FIFO, /dev/zero or deep nesting
# there is refused by name, never read). {layers: {L: {files: {rel: {size, sha256}}, source: {shards: {..}}}}}: depth 6.
MANIFEST_KIND = Kind("convert manifest", 64 << 20, 8)
# Checkpoints whose experts the worker dequantizes to BF16 first (at most 1 byte a parameter with scales: FP8 128x128
# blocks; compressed-tensors pack-quantized INT4, Kimi-K2's format, 0.5 B + group scales).
QUANTIZED_SOURCES = ("fp8", "compressed-tensors")
LAYERS_IN_FLIGHT = 3  # convert_worker.py IN_FLIGHT: the reader's bound on source layers held at once
READAHEAD_LAYERS = 2  # the layer the reader waits to begin and the next, in the page cache before it gets there
READAHEAD_MIN = 8 << 30  # ... or this much, when more (readahead_for)
WORKER_BASE_RAM = 1 << 30  # the worker's interpreter with torch and kt-kernel imported (measured ~0.6 GB; rounded up)
_EXPERT = re.compile(r"(?:^|\.)layers\.(\d+)\.mlp\.experts\.")  # the routed-expert tensors the worker reads


@dataclass(frozen=True)
class ConvertPlan:
    """One conversion: the source checkpoint, the output dir, kt-kernel's construction values, the layers."""

    model_path: str
    out: str
    method: str
    threadpool_count: int
    cpuinfer: int
    numa_nodes: tuple[int, ...] | None
    layers: tuple[int, ...]
    num_experts: int
    top_k: int
    hidden_size: int
    moe_intermediate_size: int
    source_bytes_per_param: int = 2  # BF16; 1 for FP8 checkpoints
    layers_per_process: int = 0  # 0: every layer in one worker process; else a fresh process each this many layers
    readahead_bytes: int = 0  # how far the read-ahead process may read beyond the reader (page cache; 0: none)

    @property
    def chunk(self) -> int:
        """Layers one worker process converts: kt-kernel 0.7.2 frees no quantized layer before its process ends."""
        n = max(1, len(self.layers))
        return min(n, self.layers_per_process) if self.layers_per_process > 0 else n

    @property
    def layer_bytes_out(self) -> int:
        """kt-kernel's files for one layer: int weights plus one f32 scale per output row and partition
        (measured: 8 experts, H=I=256, 2 pools, INT8 -> 1,605,632 B)."""
        e, h, i, p = self.num_experts, self.hidden_size, self.moe_intermediate_size, self.threadpool_count
        return e * (3 * h * i * METHODS[self.method] // 8 + 4 * (2 * i + h * p))

    @property
    def layer_bytes_in_bf16(self) -> int:
        return self.num_experts * 3 * self.hidden_size * self.moe_intermediate_size * 2

    @property
    def layer_bytes_in(self) -> int:
        return self.num_experts * 3 * self.hidden_size * self.moe_intermediate_size * self.source_bytes_per_param

    @property
    def ram_bytes(self) -> int:
        """The bound the worker keeps: at most LAYERS_IN_FLIGHT source layers (one quantized, one ready, one being
        read), each its BF16 stack plus, for a quantized source (FP8, packed INT4), its raw bytes until hashed;
        kt-kernel's quantized buffers: kt-kernel 0.7.2 never frees a quantized layer's buffers (AMX_MOE_BASE
        allocates them with aligned_alloc and its destructor frees none; measured: RSS grows by one output layer per
        layer converted), so one output layer for each of the `chunk` layers one process converts, plus the
        quantizer's transient scratch (measured: two INT8-sized layers, one byte a weight, for AMXINT8 and AMXINT4
        alike); the dequantization scratch of one tensor (float32 values and scales); the interpreter with torch
        and kt-kernel loaded (WORKER_BASE_RAM)."""
        return self.ram_for(self.chunk)

    def ram_for(self, chunk: int) -> int:
        e, h, i = self.num_experts, self.hidden_size, self.moe_intermediate_size
        staged = self.layer_bytes_in if self.source_bytes_per_param != 2 else 0
        return (LAYERS_IN_FLIGHT * (self.layer_bytes_in_bf16 + staged) + chunk * self.layer_bytes_out
                + 2 * e * 3 * h * i + 3 * h * i * 4 + WORKER_BASE_RAM)

    def identity(self) -> dict[str, Any]:
        """What the manifest must match for a rerun to reuse finished layers."""
        return {"kind": "kt-launch-convert", "method": self.method, "threadpool_count": self.threadpool_count,
                "num_experts": self.num_experts, "hidden_size": self.hidden_size,
                "moe_intermediate_size": self.moe_intermediate_size}

    def spec(self, verify: bool = True, sources: Mapping[str, Any] | None = None,
             redo: tuple[int, ...] = ()) -> dict[str, Any]:
        """The worker's input. `sources`: each layer's source identity, recorded with the layer; `redo`: layers whose
        manifest entry was made from other source bytes, converted again without looking at their files."""
        return {"model_path": self.model_path, "out": self.out, "method": self.method,
                "threadpool_count": self.threadpool_count, "cpuinfer": self.cpuinfer,
                "numa_nodes": list(self.numa_nodes) if self.numa_nodes else None, "layers": list(self.layers),
                "num_experts": self.num_experts, "top_k": self.top_k, "hidden_size": self.hidden_size,
                "moe_intermediate_size": self.moe_intermediate_size, "chunked_prefill_size": CHUNK,
                "identity": self.identity(), "verify": verify, "sources": dict(sources or {}), "redo": list(redo),
                "layers_per_process": self.chunk if self.chunk < len(self.layers) else 0,
                "readahead_bytes": self.readahead_bytes}


def fit_processes(cp: ConvertPlan, available: int | None) -> ConvertPlan:
    """The plan with the most layers a worker process may convert within `available` bytes of RAM (all of them in one
    process when they fit or nothing is known; at least one: `ram_refusal` refuses a host short even of that), and
    the read-ahead sized to the RAM left over (`readahead_for`)."""
    n = max(1, len(cp.layers))
    if cp.method not in METHODS:  # nothing to convert (refused by method_refusal): no bound to fit
        return cp
    if not available or cp.ram_for(n) <= available:
        fitted = replace(cp, layers_per_process=0)
    else:
        room = (available - cp.ram_for(0)) // max(1, cp.layer_bytes_out)
        fitted = replace(cp, layers_per_process=int(max(1, min(n, room))))
    return replace(fitted, readahead_bytes=readahead_for(fitted, available))


def readahead_for(cp: ConvertPlan, available: int | None) -> int:
    """How far the worker's read-ahead process (convert_readahead.py) may read beyond the layer its reader begins:
    READAHEAD_LAYERS source layers, or READAHEAD_MIN when that is more (small layers: the seconds torch and kt-kernel
    take to import are 9-10 GB of an NVMe's time), within the RAM the conversion's own bound leaves (the page cache
    is memory too: read ahead beyond it, pages would be evicted before the reader takes them and read twice). 0 where
    less than one layer is left: the reader reads alone."""
    want = max(READAHEAD_LAYERS * cp.layer_bytes_in, READAHEAD_MIN)
    if available is None:
        return READAHEAD_LAYERS * cp.layer_bytes_in
    spare = available - cp.ram_bytes
    return min(want, spare) if spare >= cp.layer_bytes_in else 0


def target_method(get: Callable[[str], Any]) -> str:
    """The format to write: kt.method, or in MoE-LoRA mode the base format the SFT method reads."""
    return cpu_format(get)


def plan_conversion(get: Callable[[str], Any], model: Any, out: str, method: str | None = None) -> ConvertPlan:
    """From the resolved plan (`get(key)`) and `ModelFacts`; `method` (convert --method) overrides the plan's."""
    return ConvertPlan(
        model_path=str(get("model.path")), out=out, method=method or target_method(get),
        threadpool_count=int(get("kt.threadpool_count") or 1), cpuinfer=int(get("kt.cpuinfer") or 1),
        numa_nodes=tuple(get("kt.numa_nodes")) if get("kt.numa_nodes") else None,
        layers=tuple(model.moe_layers), num_experts=model.num_experts, top_k=model.top_k,
        hidden_size=model.hidden_size, moe_intermediate_size=model.moe_intermediate_size,
        source_bytes_per_param=1 if getattr(model, "quant_method", "") in QUANTIZED_SOURCES else 2)


# -- refusals (pure: the caller gathers the facts) -------------------------------------------------

def _inside(path: str, root: str) -> bool:
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def method_refusal(cp: ConvertPlan) -> Finding | None:
    if cp.method in METHODS:
        return None
    return error("KT-E421", f"kt.method={cp.method}: kt-launch convert writes kt-kernel's AMXINT8 or AMXINT4 format; "
                 f"{cp.method} reads its weights as they are", "set kt.method=AMXINT8 or AMXINT4 to convert, or "
                 "use the checkpoint directly")


def location_refusal(cp: ConvertPlan) -> Finding | None:
    if _inside(cp.out, cp.model_path):
        return error("KT-E420", f"output {cp.out} is inside (or is) model.path {cp.model_path}; SGLang and kt-kernel "
                     "would read the converted files as part of the checkpoint (seed bug 5)",
                     f"write beside it, e.g. --out {cp.model_path.rstrip(os.sep)}-{cp.method}")
    return None


def foreign_entries(names: list[str], has_manifest: bool) -> list[str]:
    """Entries of the output dir that this conversion did not write (`_layer_N` counts only beside a manifest)."""
    return sorted(n for n in names if n not in _OURS and not (has_manifest and _LAYER_DIR.match(n)))


def foreign_refusal(cp: ConvertPlan, names: list[str], manifest: Mapping[str, Any] | None) -> Finding | None:
    foreign = foreign_entries(names, manifest is not None)
    if foreign:
        shown = ", ".join(foreign[:4]) + (" ..." if len(foreign) > 4 else "")
        return error("KT-E422", f"output {cp.out} holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} this "
                     f"conversion did not write ({shown})", "choose an empty or new --out dir (nothing was written)")
    if manifest is not None:
        want = cp.identity()
        diff = [k for k in want if manifest.get(k) != want[k]]
        if diff:
            got = ", ".join(f"{k}={manifest.get(k)}" for k in diff)
            return error("KT-E422", f"output {cp.out} holds another conversion ({got}; this one: "
                         f"{', '.join(f'{k}={want[k]}' for k in diff)})", "choose another --out dir, or remove that "
                         "conversion first")
    return None


def remaining_bytes(cp: ConvertPlan, manifest: Mapping[str, Any] | None, redo: tuple[int, ...] = ()) -> int:
    done = set((manifest or {}).get("layers", {}) or {})
    return sum(cp.layer_bytes_out for layer in cp.layers if str(layer) not in done or layer in redo)


# -- the source of each layer (issue 23 item 3: never serve model A's experts for model B) -------------------

SOURCE_KEYS = ("shards", "header_sha256")  # what decides; the worker adds data_sha256 (the bytes it read) as a record


def layer_reusable(recorded: Any, current: Mapping[str, Any]) -> bool:
    """Whether a finished layer of the manifest may be kept (the worker then still checks its files byte for byte):
    only when it was converted from the same source as far as the headers tell, without reading the tensors again:
    the same shards holding its routed experts (name, size, mtime, ctime, inode) and the same header entries of those
    tensors
    (name, dtype, shape, offsets). A layer recorded without a source (an older manifest) or from another
    checkpoint of the same shape is redone, never skipped."""
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("source"), Mapping):
        return False
    return all(k in current and recorded["source"].get(k) == current[k] for k in SOURCE_KEYS)


def layers_to_redo(cp: ConvertPlan, manifest: Mapping[str, Any] | None,
                   sources: Mapping[str, Mapping[str, Any]]) -> tuple[int, ...]:
    """Layers the manifest records as done that were converted from another source: the worker converts them again."""
    done = (manifest or {}).get("layers") or {}
    return tuple(layer for layer in cp.layers
                 if str(layer) in done and not layer_reusable(done[str(layer)], sources.get(str(layer), {})))


def disk_refusal(cp: ConvertPlan, need: int, free: int) -> Finding | None:
    if need > free:
        return error("KT-E423", f"output {cp.out}: {_gb(need)} needed for {cp.method} "
                     f"({len(cp.layers)} MoE layers), {_gb(free)} free there", "free disk space or choose --out on "
                     "a larger filesystem")
    return None


def ram_refusal(cp: ConvertPlan, available: int | None) -> Finding | None:
    """The worker's RAM bound (ram_bytes) against what the host has available now (MemAvailable); None: unknown."""
    if available and cp.ram_bytes > available:
        return error("KT-E451", f"convert: {_gb(cp.ram_bytes)} of RAM needed ({LAYERS_IN_FLIGHT} layers of "
                     f"{_gb(cp.layer_bytes_in_bf16)} BF16 experts in flight, kt-kernel's buffers of {cp.chunk} "
                     "quantized layers and its scratch, the interpreter), "
                     f"{_gb(available)} available on this host", "free memory, or convert on a host with more RAM "
                     "(the files are the same on any CPU with AVX-512 or AMX); nothing was read or written")
    return None


def interpreter_refusal(python: str, env: Mapping[str, str] | None = None) -> Finding | None:
    """Whether `python` (runtime.python or --python) can run the conversion at all: torch, kt-kernel and safetensors
    installed there (found, not imported: fast). Checked before anything is read or written."""
    from kt_launch.core.install import KT_KERNEL, pip_line

    r = _worker.run_worker(python, WORKER_PATH, stdin=json.dumps({"task": "preflight"}), env=env, timeout_s=120.0)
    a = r.answer or {}
    if not r.ok or not a.get("ok"):
        why = r.message or a.get("error") or "it gave no answer"
        return error("KT-E450", f"convert: the interpreter {python} cannot run the conversion ({why})",
                     "point --python (or runtime.python) at the interpreter that has torch and kt-kernel; nothing "
                     "was read or written")
    missing = [name for name, key in (("torch", "torch"), ("kt-kernel", "kt_kernel"), ("safetensors", "safetensors"))
               if not a.get(key)]
    if not missing:
        return None
    if not a.get("kt_kernel"):  # kt-kernel's own requirements bring torch and safetensors
        fix = pip_line(python, KT_KERNEL)
    else:  # kt-kernel is there but what it requires is not: its own pin for torch
        torch_req = str(a.get("kt_kernel_requires_torch") or "torch")
        fix = f"{shlex.quote(python)} -m pip install " + " ".join(
            shlex.quote(torch_req if m == "torch" else m) for m in missing)
    return error("KT-E450", f"convert: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in "
                 f"{python} (--python, else runtime.python), which runs kt-kernel's quantizer",
                 f"install it there: {fix}; or point --python at an interpreter that has them; nothing was read or "
                 "written")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.2f} MB"


# -- facts of the output dir (I/O) ------------------------------------------------------------------

def read_output_dir(out: str) -> tuple[list[str], dict[str, Any] | None, str | None]:
    """(entry names, manifest or None, problem): what is already at the output path."""
    if not os.path.lexists(out):
        return [], None, None
    if not os.path.isdir(out):
        return [os.path.basename(out)], None, f"{out} exists and is not a directory"
    names = os.listdir(out)
    manifest = None
    if MANIFEST in names:
        try:
            manifest = read_json(os.path.join(out, MANIFEST), MANIFEST_KIND)
        except ReadError as e:
            return names, None, f"{e}"
        if not _manifest_shape_ok(manifest):
            return names, None, f"{out}/{MANIFEST} is not a kt-launch convert manifest"
    return names, manifest, None


def _manifest_shape_ok(m: Any) -> bool:
    """The fields the launcher and the worker read: kind, and layers as {layer: {files: {...}, ...}}."""
    if not isinstance(m, dict) or m.get("kind") != "kt-launch-convert":
        return False
    layers = m.get("layers", {})
    return isinstance(layers, dict) and all(isinstance(v, dict) and isinstance(v.get("files", {}), dict)
                                            for v in layers.values())


def _shard_header(path: str) -> dict[str, Any]:
    """A shard's safetensors header: regular files only (a FIFO is refused, never opened for reading), at most the
    size safetensors itself accepts, through the bounded JSON parser."""
    what = SAFETENSORS_HEADER.what
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ReadError(what, path, "not a regular file (a FIFO, socket or device)")
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 <= n <= SAFETENSORS_HEADER.max_bytes:
                raise ReadError(what, path, f"cut off, or a header size over {SAFETENSORS_HEADER.max_bytes} bytes")
            raw = f.read(n)
    except OSError as e:
        raise ReadError(what, path, f"cannot read ({e.strerror or e})") from None
    if len(raw) < n:
        raise ReadError(what, path, f"cut off (the header says {n} bytes)")
    doc = parse_json(path, raw, SAFETENSORS_HEADER)
    if not isinstance(doc, dict):
        raise ReadError(what, path, "not a JSON object")
    return doc


def source_identity(model_path: str, layers: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Per MoE layer, what its conversion is made from, from the safetensors headers only (the worker hashes the
    tensor bytes as it reads them, `data_sha256`, so nothing is read twice): the shards that hold the layer's
    routed-expert tensors (file name, size, mtime_ns; inode: another checkpoint's shards written in the same clock
    tick still differ; ctime_ns, which no one can set back: a shard rewritten in place and its mtime restored still
    differs; a model dir renamed keeps all of them) and a sha256 of those tensors' header entries. Raises ReadError
    naming the shard."""
    want = set(layers)
    entries: dict[int, list] = {}
    shards: dict[int, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(model_path), "*.safetensors"))):  # what the worker reads
        header = _shard_header(path)
        st = os.stat(path)
        name = os.path.basename(path)
        for key, ent in header.items():
            m = _EXPERT.search(key)
            if m is None or int(m.group(1)) not in want or not isinstance(ent, dict):
                continue
            layer = int(m.group(1))
            entries.setdefault(layer, []).append([key, name, ent.get("dtype"), ent.get("shape"),
                                                  ent.get("data_offsets")])
            shards.setdefault(layer, {})[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                  "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}
    return {str(layer): {"shards": shards.get(layer, {}),
                         "header_sha256": hashlib.sha256(json.dumps(sorted(entries.get(layer, [])), sort_keys=True)
                                                         .encode()).hexdigest()} for layer in sorted(want)}


def free_bytes(out: str) -> int:
    """Free space (for an unprivileged writer) on the filesystem the output goes to."""
    p = os.path.abspath(out)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True)
class Prepared:
    """What `prepare` found: the reasons not to start, else each layer's source and the layers to convert again."""

    findings: list[Finding]
    sources: dict[str, dict[str, Any]]
    redo: tuple[int, ...] = ()


def prepare(cp: ConvertPlan, python: str | None = None, env: Mapping[str, str] | None = None,
            available_ram: int | None = None) -> Prepared:
    """Every reason not to start, checked before anything is read or written (the interpreter when `python` is given,
    the RAM bound against `available_ram`); and what the worker needs to tell a finished layer of this source from
    one of another (`layers_to_redo`)."""
    for f in (method_refusal(cp), location_refusal(cp)):
        if f is not None:
            return Prepared([f], {})
    names, manifest, problem = read_output_dir(cp.out)
    if problem:
        return Prepared([error("KT-E422", f"output {problem}", "choose an empty or new --out dir (nothing was "
                                                                "written)")], {})
    f = foreign_refusal(cp, names, manifest)
    if f is not None:
        return Prepared([f], {})
    try:
        sources = source_identity(cp.model_path, cp.layers)
    except ReadError as e:
        return Prepared([error("KT-E440", f"convert: {e}", "fix or replace that shard of model.path (`kt-launch check` "
                               "names what is wrong with it); nothing was written")], {})
    redo = layers_to_redo(cp, manifest, sources)
    short = [f for f in (ram_refusal(cp, available_ram),
                         disk_refusal(cp, remaining_bytes(cp, manifest, redo), free_bytes(cp.out))) if f]
    if not short and python:  # last: the one check that starts a process
        short = [f for f in (interpreter_refusal(python, env),) if f]
    return Prepared(short, sources, redo)


def refusals(cp: ConvertPlan) -> list[Finding]:
    """Every reason not to start, checked before anything is written."""
    return prepare(cp).findings


# -- the worker run -----------------------------------------------------------------------------------

def parse_progress(line: str) -> dict[str, Any] | None:
    """One per-layer progress record from the worker's stderr, or None for any other line."""
    if not line.startswith(PROGRESS):
        return None
    try:
        d = json.loads(line[len(PROGRESS):])
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def timeout_for(cp: ConvertPlan) -> float:
    """Generous: a slow disk at 20 MB/s plus kt-kernel's import and the read-back check."""
    return 600.0 + len(cp.layers) * cp.layer_bytes_in / 20e6


def run_conversion(cp: ConvertPlan, python: str, env: Mapping[str, str] | None = None,
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   timeout_s: float | None = None, prepared: Prepared | None = None,
                   pass_fds: tuple[int, ...] = ()) -> _worker.WorkerResult:
    def on_line(line: str) -> None:
        rec = parse_progress(line)
        if rec is not None and progress is not None:
            progress(rec)

    prepared = prepared or prepare(cp)
    spec = cp.spec(sources=prepared.sources, redo=prepared.redo)
    return _worker.run_worker(python, WORKER_PATH, stdin=json.dumps(spec), env=env,
                              timeout_s=timeout_s or timeout_for(cp), stderr_line=on_line, pass_fds=pass_fds)


def failure(cp: ConvertPlan, r: _worker.WorkerResult) -> Finding | None:
    """The finding for a run that did not convert and verify, or None."""
    a = r.answer or {}
    if r.ok and a.get("ok"):
        return None
    kind, msg = a.get("error_kind"), a.get("error") or r.message
    if kind == "method_unavailable":
        return error("KT-E402", f"{cp.method}: the kt-kernel variant '{a.get('cpu_variant')}' that loaded does not "
                     f"implement it ({msg}); nothing was written", "convert on a CPU with AVX-512 or AMX (the files "
                     "are the same on both), or use BF16 weights")
    if kind == "kt_kernel_missing":  # found by the preflight, yet its import failed: nothing ran
        return error("KT-E450", f"convert: {msg}; nothing was converted", "fix that install (or point --python at "
                     "an interpreter where `import torch, kt_kernel` works) and run the same command again")
    if kind == "weights" and a.get("started") is False:  # the source, checked before the output was touched
        return error("KT-E452", f"convert: {msg}; nothing was written", "convert reads BF16, FP8 E4M3 with 128x128 "
                     "block scales, or symmetric compressed-tensors pack-quantized INT4: fix model.path or convert "
                     "it to one of those first")
    if kind == "tolerance":
        return error("KT-E425", f"the conversion was written but its read-back check failed: {msg}",
                     "report it with the kt-kernel version; do not serve these weights")
    where = f" (stderr: {r.stderr_tail[-400:]})" if r.stderr_tail and not a else ""
    return error("KT-E424", f"the conversion failed in {a.get('python') or 'the worker'}: {msg}{where}; finished "
                 "layers stay recorded and a rerun resumes", "fix the cause above and run the same command again")


# -- what the user sees -------------------------------------------------------------------------------

WEIGHT_CHECKS = ("KT-E220", "KT-E221", "KT-E222", "KT-E223")  # `kt-launch check`'s weight rules for kt.weight_path
OUTPUT_CHECKS = WEIGHT_CHECKS + tuple(f"KT-E21{n}" for n in range(10))  # ... and its moe_lora.path adapter rules


def start_line(cp: ConvertPlan, python: str) -> str:
    return (f"converting {len(cp.layers)} MoE layers of {cp.model_path} to {cp.method} "
            f"({cp.threadpool_count} NUMA partition(s)) in {cp.out}, with kt-kernel in {python}; about "
            f"{_gb(cp.ram_bytes)} of RAM at most ({LAYERS_IN_FLIGHT} layers in flight"
            f"{f', a fresh worker process each {cp.chunk} layers' if cp.chunk < len(cp.layers) else ''}), "
            f"{_gb(cp.layer_bytes_out * len(cp.layers))} on disk"
            + (f"; reads up to {_gb(cp.readahead_bytes)} ahead into the page cache" if cp.readahead_bytes else ""))


def progress_line(rec: Mapping[str, Any], elapsed: float | None = None) -> str:
    """One layer's line: what was read and how long it took, and the time left at this pace (elapsed: seconds
    since the worker started)."""
    i, n = int(rec.get("index") or 0), int(rec.get("total") or 0)
    head = f"[{i}/{n}] layer {rec.get('layer')}: "
    eta = f", about {elapsed / i * (n - i):.0f} s left" if elapsed is not None and 0 < i < n else ""
    if rec.get("skipped"):
        return head + "already converted (files match the manifest), skipped" + eta
    if rec.get("other_source"):
        head += "its earlier conversion was made from other source files, converted again: "
    return (head + f"read {_gb(int(rec.get('bytes_in') or 0))} in {float(rec.get('read_s') or 0):.2f} s, "
            f"quantized in {float(rec.get('quant_s') or 0):.2f} s, {float(rec.get('seconds') or 0):.2f} s in all"
            + eta)


class Progress:
    """The worker's per-layer records as the user sees them: on a terminal one bar rewritten in place (layers done,
    GB/s of source read, time left); otherwise (a pipe, a log, --json) one line per layer."""

    WIDTH = 24

    def __init__(self, stream: Any, tty: bool, clock: Callable[[], float] | None = None):
        import time

        self.stream, self.tty, self.clock = stream, tty, clock or time.monotonic
        self.t0 = self.clock()
        self.bytes_in, self.drawn = 0, False

    def __call__(self, rec: Mapping[str, Any]) -> None:
        elapsed = self.clock() - self.t0
        self.bytes_in += int(rec.get("bytes_in") or 0)
        if not self.tty:
            self.stream.write(progress_line(rec, elapsed) + "\n")
        else:
            self.stream.write("\r" + self.bar(rec, elapsed) + "\x1b[K")
            self.drawn = True
        self.stream.flush()

    def bar(self, rec: Mapping[str, Any], elapsed: float) -> str:
        i, n = int(rec.get("index") or 0), max(int(rec.get("total") or 0), 1)
        fill = self.WIDTH * i // n
        rate = f"{self.bytes_in / elapsed / 1e9:.2f} GB/s" if elapsed > 0 and self.bytes_in else "-- GB/s"
        left = f"about {elapsed / i * (n - i):.0f} s left" if 0 < i < n else ("done" if i >= n else "")
        return f"[{'#' * fill}{'.' * (self.WIDTH - fill)}] {i}/{n} layers, layer {rec.get('layer')}, {rate}, {left}"

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def summary_json(cp: ConvertPlan | None, a: Mapping[str, Any], lp: "LoraPlan | None" = None,
                 lora: Mapping[str, Any] | None = None) -> dict[str, Any]:
    rows = a.get("layers") or []
    outputs = ({"kt.weight_path": cp.out} if cp else {}) | ({"moe_lora.path": lp.out} if lp else {})
    return {"outputs": outputs, "method": cp.method if cp else None,
            "threadpool_count": cp.threadpool_count if cp else None,
            "layers": len(rows), "skipped": sum(1 for r in rows if r.get("skipped")),
            "bytes_in": a.get("bytes_in", 0), "bytes_out": a.get("bytes_out", 0) + int((lora or {}).get("bytes_out") or 0),
            "seconds": round(float(a.get("seconds") or 0) + float((lora or {}).get("seconds") or 0), 4),
            "read_s": a.get("read_s"), "wait_s": a.get("wait_s"), "quant_s": a.get("quant_s"),
            "hash_s": a.get("hash_s"), "finish_s": a.get("finish_s"), "stages": a.get("stages"),
            "ram_bound": cp.ram_bytes if cp else None, "peak_rss": a.get("peak_rss"),
            "peak_rss_with_verify": a.get("peak_rss_with_verify"), "convert_s": a.get("convert_s"),
            "import_s": a.get("import_s"), "verify_s": a.get("verify_s"),
            "processes": a.get("processes", 1 if a else None), "layers_per_process": cp.chunk if cp else None,
            "readahead_bytes": cp.readahead_bytes if cp else None,
            "verify": a.get("verify") or [],
            "lora": dict(lora) if lora else None,
            "cpu_variant": a.get("cpu_variant"), "kt_kernel_version": a.get("kt_kernel_version")}


def summary_text(cp: ConvertPlan | None, a: Mapping[str, Any], get: Callable[[str], Any], lp: "LoraPlan | None" = None,
                 lora: Mapping[str, Any] | None = None) -> str:
    s = summary_json(cp, a, lp, lora)
    lines, sets = [], []
    if cp is not None:
        secs = float(a.get("seconds") or 0)
        rate = f", {_gb(s['bytes_in'] / secs)}/s read" if secs and s["bytes_in"] else ""
        lines.append(f"converted {s['layers'] - s['skipped']} of {s['layers']} MoE layers to {cp.method} in {cp.out} "
                     f"({s['skipped']} already done); read {_gb(s['bytes_in'])}, wrote {_gb(int(a.get('bytes_out') or 0))}"
                     f" in {secs:.1f} s{rate} (kt-kernel {s['kt_kernel_version']}, variant {s['cpu_variant']})")
        for v in s["verify"]:
            lines.append(f"layer {v['layer']} read back with kt-kernel's load_weights: relative error "
                         f"{v['rel_err']:.3g} against the source (tolerance {v['tolerance']})")
        sets += [f"kt.weight_path={cp.out}", f"kt.threadpool_count={cp.threadpool_count}"]
        if not get("moe_lora.sft_method"):
            sets.insert(1, f"kt.method={cp.method}")
    if lp is not None:
        lines.append(f"expert LoRA {lp.source} -> {lp.out}: " + (
            f"{lora.get('tensor_count')} tensors, rank {lora.get('rank')}, lora_alpha {lora.get('lora_alpha')} "
            "(kt-kernel's convert_kt_to_sglang_adapter)" if lora else "already converted"))
        sets.append(f"moe_lora.path={lp.out}")
    lines.append("use it with:")
    lines += [f"  --set {shlex.quote(x)}" for x in sets]
    return "\n".join(lines)


# -- expert LoRA (sglang-kt): kt-kernel's sft/convert_kt_to_sglang_adapter.py ---------------------------

FUSED = "fused_expert_lora.safetensors"
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}


@dataclass(frozen=True)
class LoraPlan:
    """A raw fused expert LoRA (kt SFT output) to turn into an SGLang adapter dir beside it."""

    source: str
    out: str
    base_model: str

    def spec(self) -> dict[str, Any]:
        return {"task": "lora", "input": self.source, "out": self.out, "base_model": self.base_model}


def lora_source(get: Callable[[str], Any]) -> str | None:
    """moe_lora.path when sglang-kt would read it and it holds only the raw fused training output."""
    path = get("moe_lora.path")
    if not path or get("runtime.flavor") != "sglang-kt" or not os.path.isdir(path):
        return None
    names = set(os.listdir(path))
    return str(path) if FUSED in names and "adapter_model.safetensors" not in names else None


def lora_plan(get: Callable[[str], Any], lora_out: str | None) -> LoraPlan | None:
    src = lora_source(get)
    if src is None:
        return None
    out = os.path.abspath(lora_out) if lora_out else os.path.abspath(src).rstrip(os.sep) + "-sglang"
    return LoraPlan(os.path.abspath(src), out, str(get("model.path")))


def lora_done(lp: LoraPlan) -> bool:
    """A finished earlier run: the adapter dir holds exactly what the converter writes."""
    return os.path.isdir(lp.out) and set(os.listdir(lp.out)) == ADAPTER_FILES


def lora_refusals(lp: LoraPlan) -> list[Finding]:
    for root, what in ((lp.source, "moe_lora.path"), (lp.base_model, "model.path")):
        if _inside(lp.out, root):
            return [error("KT-E420", f"LoRA output {lp.out} is inside (or is) {what} {root}; it would be read as part "
                          "of it (seed bug 5)", f"write beside it: --lora-out {lp.source.rstrip(os.sep)}-sglang")]
    if os.path.lexists(lp.out) and not lora_done(lp) and (not os.path.isdir(lp.out) or os.listdir(lp.out)):
        return [error("KT-E422", f"LoRA output {lp.out} exists and holds files this conversion did not write",
                      "choose an empty or new --lora-out dir (nothing was written)")]
    return []


def run_lora(lp: LoraPlan, python: str, env: Mapping[str, str] | None = None,
             pass_fds: tuple[int, ...] = ()) -> _worker.WorkerResult:
    return _worker.run_worker(python, WORKER_PATH, stdin=json.dumps(lp.spec()), env=env, timeout_s=1800.0,
                              pass_fds=pass_fds)
