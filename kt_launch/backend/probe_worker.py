"""kt-kernel probe worker: runs in the *target* interpreter, never in the launcher.

Executed as ``python /abs/path/probe_worker.py`` with one JSON spec on stdin; writes exactly one
JSON object to the original stdout. Everything else (kt-kernel's and the C++ extension's prints)
goes to stderr, because fd 1 is redirected to fd 2 before anything is imported.

Standalone on purpose: imports only the standard library at module level, then torch and kt_kernel
in the first stage of ``run`` (``_import_stage``). It must not import ``kt_launch`` (the target interpreter
may not have it).

What it does, for one point (method, cpuinfer, threadpool_count, numa_nodes, chunk size, shape):
  1. import kt_kernel and report the CPU variant that loaded;
  2. build ``KTMoEWrapper`` as SGLang's kt_ep_wrapper does (all experts on CPU: gpu_experts_mask
     all False; ``mode="sft"`` with lora_rank/lora_alpha for *_SFT methods);
  3. load synthetic bf16 expert weights (online quantization via ``load_weights_from_tensors``
     for AMXINT4/AMXINT8, a tiny HF safetensors dir + ``load_weights`` for BF16 methods) or the
     real weights under ``weight_path``;
  4. time forwards at qlen 1 (decode) and qlen = prefill_qlen (default: chunked_prefill_size);
  5. compare with a float32 torch reference MoE (explicit top-k routing, SiLU-gated MLP, LoRA delta
     scaled by alpha/rank in SFT mode) and report the relative error.
``run`` calls one small function per stage (import, parse spec, weights, LoRA, build the wrapper, load,
forward path, decode, prefill, reference, verdict); each names itself in result["stage"] for the error.

Spec keys (see kt_launch.backend.probe.ProbeSpec): method, cpuinfer, threadpool_count, numa_nodes,
chunked_prefill_size, hidden_size, moe_intermediate_size, num_experts, top_k, lora_rank, lora_alpha,
weight_path, layer_idx, prefill_qlen, decode_repeats, prefill_repeats, warmup, check, seed, tolerance,
weight_source (auto|tensors|hf_dir|kt_files), sft_path (auto|forward|serving), keep_tmp, and the test
hook reference_lora_scaling. Weight sources: AMXINT4/AMXINT8 and AMXINT4_SFT use online quantization
from tensors; BF16 and AMXBF16_SFT read a tiny HF dir written here; AMXINT8_SFT reads .kt files written
by kt-kernel's own INT8 quantizer (AMXInt8_MOE with save=True), because INT8 SFT has no online path.
SFT paths: "forward" = the training API (output on the CPU), "serving" = submit/sync_forward_inference on
a CUDA stream (GPU output buffer), "auto" = serving when CUDA is available.
A host without an accelerator cannot pin memory, which kt-kernel's inference buffers ask for: there the
worker drops pin_memory (see _install_pin_shim) and says so in the result notes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

WORKER_VERSION = 1

# Relative-error tolerance per method family (||out - ref|| / ||ref||, float32 reference
# computed from the same bf16 weights). kt-kernel computes in bf16 (rounding of activations and
# of the intermediate), so BF16 is not exact; INT8 adds per-channel weight quantization, INT4 more.
TOLERANCE = {
    "BF16": 0.03,
    "INT8": 0.06,
    "INT4": 0.35,
    "FP8": 0.10,
    "OTHER": 0.30,
}
# Above this the kernel is not computing the layer at all (wrong layout, garbage, NaN).
GROSS = 0.9



def method_family(method: str) -> str:
    m = method.upper()
    if "INT4" in m or "FP4" in m:
        return "INT4"
    if "INT8" in m:
        return "INT8"
    if "FP8" in m:
        return "FP8"
    if "BF16" in m:
        return "BF16"
    return "OTHER"


def is_sft(method: str, spec=None) -> bool:
    """The launcher's method table says it (spec["sft"], kt_launch/core/methods.py); a spec written by hand
    without the field falls back to kt-kernel's naming (every SFT method has "_SFT" in its name)."""
    if spec is not None and "sft" in spec:
        return bool(spec["sft"])
    return "_SFT" in method


class ProbeError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


# ----------------------------------------------------------------------------------------
# torch side
# ----------------------------------------------------------------------------------------

def _install_pin_shim(torch, result):
    """kt-kernel allocates its staging buffers with pin_memory=True unconditionally
    (experts_base.py BaseMoEWrapper.__init__, KExpertsCPUBuffer.get_buffer). A torch without an
    accelerator refuses that. Pinning only speeds up DMA, it does not change the numbers, so on a
    host with no accelerator the probe drops the flag and says so in the result."""
    has_acc = False
    try:
        has_acc = bool(torch.cuda.is_available())
    except Exception:
        has_acc = False
    if has_acc:
        return False

    def wrap(fn):
        def inner(*a, **k):
            if k.get("pin_memory"):
                k["pin_memory"] = False
            return fn(*a, **k)
        inner.__wrapped__ = fn
        return inner

    for name in ("zeros", "empty", "full", "ones"):
        setattr(torch, name, wrap(getattr(torch, name)))
    result["notes"].append("no accelerator: pinned staging buffers replaced by ordinary CPU memory (pin_memory shim)")
    return True


def _synthetic_weights(torch, spec, gen):
    E, H, I = spec["num_experts"], spec["hidden_size"], spec["moe_intermediate_size"]
    # Uniform with std 1/sqrt(fan_in) keeps activations O(1) through the layer; drawn straight in
    # bf16 (uniform_ is much cheaper than randn on one thread, and a DS-V2-Lite layer is 553M values).
    def u(shape, fan_in):
        a = (3.0 / fan_in) ** 0.5
        return torch.empty(shape, dtype=torch.bfloat16).uniform_(-a, a, generator=gen)

    return u((E, I, H), H), u((E, I, H), H), u((E, H, I), I)


def _synthetic_lora(torch, spec, gen):
    E, H, I, r = spec["num_experts"], spec["hidden_size"], spec["moe_intermediate_size"], spec["lora_rank"]
    # Non-zero B (PEFT initialises B to zero, which would hide a missing LoRA path).
    s = 0.5

    def t(shape, fan_in):
        return (torch.randn(shape, generator=gen) * (s * fan_in ** -0.5)).to(torch.bfloat16).contiguous()

    return {
        "gate_lora_a": t((E, r, H), H),
        "gate_lora_b": t((E, I, r), r),
        "up_lora_a": t((E, r, H), H),
        "up_lora_b": t((E, I, r), r),
        "down_lora_a": t((E, r, I), I),
        "down_lora_b": t((E, H, r), r),
    }


def _write_hf_dir(torch, path, layer_idx, gate, up, down):
    """A minimal HF-style checkpoint: one safetensors file with the layer's routed experts."""
    from safetensors.torch import save_file

    tensors = {}
    for e in range(gate.shape[0]):
        base = f"model.layers.{layer_idx}.mlp.experts.{e}"
        tensors[f"{base}.gate_proj.weight"] = gate[e].contiguous()
        tensors[f"{base}.up_proj.weight"] = up[e].contiguous()
        tensors[f"{base}.down_proj.weight"] = down[e].contiguous()
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"))


def _read_hf_layer(torch, path, layer_idx, num_experts):
    """Read the bf16 experts of one layer from an HF dir (for the reference). None if absent."""
    import glob

    from safetensors import safe_open

    want = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with safe_open(f, framework="pt") as h:
            for k in h.keys():
                for prefix in (f"model.layers.{layer_idx}.mlp.experts.", f"language_model.model.layers.{layer_idx}.mlp.experts."):
                    if k.startswith(prefix):
                        want[k[len(prefix):]] = h.get_tensor(k)
    try:
        gate = torch.stack([want[f"{e}.gate_proj.weight"] for e in range(num_experts)])
        up = torch.stack([want[f"{e}.up_proj.weight"] for e in range(num_experts)])
        down = torch.stack([want[f"{e}.down_proj.weight"] for e in range(num_experts)])
    except KeyError:
        return None
    if gate.dtype != torch.bfloat16:
        return None
    return gate, up, down


def _routing(torch, qlen, spec, gen):
    E, K = spec["num_experts"], spec["top_k"]
    scores = torch.rand((qlen, E), generator=gen)
    ids = torch.topk(scores, K, dim=-1).indices.to(torch.int64).contiguous()
    w = torch.softmax(torch.randn((qlen, K), generator=gen), dim=-1).to(torch.float32).contiguous()
    return ids, w


def _reference(torch, x, ids, w, gate, up, down, lora=None, scaling=0.0):
    """float32 MoE: sum_k w_k * down_e(silu(gate_e x) * up_e x) (+ LoRA deltas)."""
    x32 = x.float()
    out = torch.zeros_like(x32)
    E = gate.shape[0]
    for e in range(E):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        xe = x32[tok]
        g = xe @ gate[e].float().t()
        u = xe @ up[e].float().t()
        if lora is not None:
            g = g + scaling * ((xe @ lora["gate_lora_a"][e].float().t()) @ lora["gate_lora_b"][e].float().t())
            u = u + scaling * ((xe @ lora["up_lora_a"][e].float().t()) @ lora["up_lora_b"][e].float().t())
        a = torch.nn.functional.silu(g) * u
        d = a @ down[e].float().t()
        if lora is not None:
            d = d + scaling * ((a @ lora["down_lora_a"][e].float().t()) @ lora["down_lora_b"][e].float().t())
        out.index_add_(0, tok, d * w[tok, slot].unsqueeze(-1))
    return out


def _rel_err(torch, out, ref):
    o = out.detach().float().cpu()
    if not torch.isfinite(o).all():
        return float("inf")
    den = float(torch.linalg.vector_norm(ref))
    num = float(torch.linalg.vector_norm(o - ref))
    return num / den if den > 0 else num


def _classify_exception(e, method, variant):
    msg = f"{type(e).__name__}: {e}".strip()
    low = msg.lower()
    if isinstance(e, RuntimeError) and ("not available" in low or "unknown sft method" in low or "not compiled" in low
                                        or "recompile" in low):
        return "method_unavailable", msg
    if isinstance(e, (ValueError, TypeError)):
        return "invalid_config", msg
    if isinstance(e, (FileNotFoundError,)):
        return "weights", msg
    return "error", msg


class _Probe:
    """What the stages share: the spec, the result being filled, torch, and what each stage built."""

    def __init__(self, spec, result, torch, variant, has_cuda):
        self.spec, self.result, self.torch = spec, result, torch
        self.method = spec["method"]
        self.sft = is_sft(self.method, spec)
        self.variant = variant
        self.has_cuda = has_cuda
        self.gate = self.up = self.down = None
        self.lora = None
        self.scaling = 0.0
        self.wrapper = None
        self.KTMoEWrapper = None
        # set by _parse_spec: shape, layer, chunk and prefill sizes, generator, tmp dir, weight source
        self.E = self.K = self.H = self.I = self.layer = self.chunk = self.prefill_qlen = None
        self.gen = self.tmp = self.weight_path = self.weight_source = self.family = None
        self.t_construct = None  # set by _build_wrapper; t_load_s counts construct + load
        self.sft_path = self.dev = None  # set by _pick_forward_path

    def fail(self, e, weights=False):
        """A ProbeError for an exception kt-kernel raised (``weights``: a bad config means bad weights)."""
        kind, msg = _classify_exception(e, self.method, self.variant)
        if weights and kind == "invalid_config":
            kind = "weights"
        return ProbeError(kind, msg)


def _import_stage(spec, result):
    """Import torch and kt_kernel, report what loaded, and start the shared probe state."""
    t_start = time.perf_counter()
    result["method"] = spec["method"]
    result["mode"] = "sft" if is_sft(spec["method"], spec) else "inference"
    result["stage"] = "import"
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        raise ProbeError("torch_missing", f"torch is not importable in {sys.executable}: {e}")
    result["torch_version"] = torch.__version__
    try:
        import kt_kernel
    except ImportError as e:
        raise ProbeError("kt_kernel_missing", f"kt_kernel is not importable in {sys.executable}: {e}")
    except Exception as e:  # noqa: BLE001  (extension load failure, CPU detection trouble)
        raise ProbeError("kt_kernel_broken", f"importing kt_kernel failed in {sys.executable}: {type(e).__name__}: {e}")
    variant = getattr(kt_kernel, "__cpu_variant__", "unknown")
    result["cpu_variant"] = variant
    result["kt_kernel_version"] = getattr(kt_kernel, "__version__", "unknown")
    result["int8_kernel"] = str(getattr(kt_kernel, "__int8_kernel__", "unknown"))
    result["t_import_s"] = round(time.perf_counter() - t_start, 3)

    try:
        import kt_kernel_ext.moe as moe_mod  # registered by kt_kernel/__init__.py
        result["ext_moe_classes"] = sorted(n for n in dir(moe_mod) if n.endswith("_MOE") or "_MOE_" in n)
    except Exception:  # noqa: BLE001
        result["ext_moe_classes"] = []

    has_cuda = False
    try:
        has_cuda = bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        has_cuda = False
    result["accelerator"] = "cuda" if has_cuda else "none"
    result["pin_shim"] = _install_pin_shim(torch, result)
    p = _Probe(spec, result, torch, variant, has_cuda)
    from kt_kernel import KTMoEWrapper

    p.KTMoEWrapper = KTMoEWrapper
    return p


def _parse_spec(p):
    """Read the shape, thread and chunk settings off the spec; make the seeded generator and tmp dir."""
    spec, torch = p.spec, p.torch
    torch_threads = spec.get("torch_threads")
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    p.E, p.K = spec["num_experts"], spec["top_k"]
    p.H, p.I = spec["hidden_size"], spec["moe_intermediate_size"]
    p.layer = int(spec.get("layer_idx", 0))
    p.chunk = int(spec["chunked_prefill_size"])
    p.prefill_qlen = int(spec.get("prefill_qlen") or p.chunk)
    p.gen = torch.Generator().manual_seed(int(spec.get("seed", 1234)))
    p.tmp = tempfile.mkdtemp(prefix="kt-probe-")
    p.result["tmpdir"] = p.tmp
    p.weight_path = spec.get("weight_path")
    p.weight_source = spec.get("weight_source") or "auto"
    p.family = method_family(p.method)


def _weight_stage(p):
    """Pick the weight source and prepare the bf16 experts (read from weight_path, or synthetic on disk)."""
    p.result["stage"] = "weights"
    method, torch = p.method, p.torch
    if p.weight_path:
        p.weight_source = "path"
        if "BF16" in method:
            got = _read_hf_layer(torch, p.weight_path, p.layer, p.E)
            if got is not None:
                p.gate, p.up, p.down = got
    else:
        p.gate, p.up, p.down = _synthetic_weights(torch, p.spec, p.gen)
        if p.weight_source == "auto":
            if method == "BF16" or method.startswith("AMXBF16"):
                p.weight_source = "hf_dir"
            elif method in ("AMXINT8_SFT", "INT8_SFT"):
                p.weight_source = "kt_files"  # INT8 SFT reads pre-quantized .kt files only
            else:
                p.weight_source = "tensors"
        if method == "BF16" and p.weight_source != "hf_dir":
            p.weight_source = "hf_dir"  # NativeMoEWrapper has no online path
        if p.weight_source == "hf_dir":
            p.weight_path = os.path.join(p.tmp, "hf")
            _write_hf_dir(torch, p.weight_path, p.layer, p.gate, p.up, p.down)
        else:
            p.weight_path = os.path.join(p.tmp, "kt")  # online quantization may write here
            os.makedirs(p.weight_path, exist_ok=True)
    p.result["weight_source"] = p.weight_source


def _lora_stage(p):
    """In SFT mode (not _SkipLoRA) draw synthetic LoRA adapters and settle rank, alpha and scaling."""
    spec, result = p.spec, p.result
    if p.sft and not p.method.endswith("_SkipLoRA"):
        r = spec.get("lora_rank") or 16
        alpha = spec.get("lora_alpha")
        alpha = float(alpha) if alpha is not None else 2.0 * r
        spec["lora_rank"], spec["lora_alpha"] = r, alpha
        p.lora = _synthetic_lora(p.torch, spec, p.gen)
        p.scaling = alpha / r
        result["lora_rank"], result["lora_alpha"], result["lora_scaling"] = r, alpha, p.scaling


def _build_wrapper(p):
    """Construct ``KTMoEWrapper`` as SGLang's kt_ep_wrapper does (all experts on the CPU)."""
    p.result["stage"] = "construct"
    spec, torch = p.spec, p.torch
    p.t_construct = time.perf_counter()
    kwargs = dict(
        layer_idx=p.layer,
        num_experts=p.E,
        num_experts_per_tok=p.K,
        hidden_size=p.H,
        moe_intermediate_size=p.I,
        gpu_experts_mask=torch.zeros(p.E, dtype=torch.bool),  # all experts on CPU
        cpuinfer_threads=int(spec["cpuinfer"]),
        threadpool_count=int(spec["threadpool_count"]),
        weight_path=p.weight_path,
        chunked_prefill_size=p.chunk,
        method=p.method,
        numa_nodes=spec.get("numa_nodes"),
    )
    if p.sft:
        kwargs.pop("gpu_experts_mask")
        kwargs.pop("numa_nodes")  # SFT ignores numa_nodes (sft/base.py _get_cpu_infer)
        kwargs.update(gpu_experts_mask=None, mode="sft", num_gpu_experts=0,
                      lora_rank=int(spec.get("lora_rank") or 16),
                      lora_alpha=float(spec.get("lora_alpha") or 32.0))
    try:
        p.wrapper = p.KTMoEWrapper(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise p.fail(e)


def _write_kt_files(p, p2l):
    """Write INT8 .kt files with kt-kernel's own quantizer (AMXInt8_MOE, save=True), for INT8 SFT."""
    # It writes <path>/_layer_L/_numa_N/INT8_*.kt, which the SFT wrapper then loads directly.
    # Same CPUInfer singleton, same thread layout.
    from kt_kernel.utils.amx import AMXMoEWrapper

    torch, spec = p.torch, p.spec
    q = AMXMoEWrapper(layer_idx=p.layer, num_experts=p.E, num_experts_per_tok=p.K, hidden_size=p.H,
                      moe_intermediate_size=p.I, gpu_experts_mask=torch.zeros(p.E, dtype=torch.bool),
                      cpuinfer_threads=int(spec["cpuinfer"]), threadpool_count=int(spec["threadpool_count"]),
                      weight_path=p.weight_path, chunked_prefill_size=p.chunk, method="AMXINT8")
    q.load_weights_from_tensors(p.gate, p.up, p.down, p2l)
    del q


def _load_weights(p):
    """Load the experts (and LoRA) into the wrapper from the chosen source; time construct + load."""
    p.result["stage"] = "load"
    torch, wrapper = p.torch, p.wrapper
    p2l = torch.arange(p.E, dtype=torch.int64)
    try:
        if p.weight_source == "kt_files":
            _write_kt_files(p, p2l)
        if p.lora is not None:
            grads = {f"grad_{k}": torch.zeros_like(v) for k, v in p.lora.items()}
            wrapper.init_lora_weights(**p.lora, **grads)
        if p.weight_source == "tensors":
            wrapper.load_weights_from_tensors(p.gate, p.up, p.down, p2l)
        else:
            wrapper.load_weights(p2l)
    except Exception as e:  # noqa: BLE001
        raise p.fail(e, weights=True)
    p.result["t_load_s"] = round(time.perf_counter() - p.t_construct, 3)


def _pick_forward_path(p):
    """Choose the SFT forward path and the device inputs go to."""
    # SFT wrappers have two forward paths: forward()/submit_forward()+sync_forward() (training API,
    # output on the CPU) and submit_forward_inference()+sync_forward_inference() (serving API: CUDA
    # stream, pinned staging, persistent GPU output buffer). spec["sft_path"] picks one.
    p.result["stage"] = "forward"
    sft_path = p.spec.get("sft_path") or "auto"
    if sft_path == "auto":
        sft_path = "serving" if p.has_cuda else "forward"
    if p.sft and sft_path == "serving" and not p.has_cuda:
        p.result["notes"].append("sft_path=serving needs CUDA; measured the forward() path instead")
        sft_path = "forward"
    if p.sft:
        p.result["sft_path"] = sft_path
    p.sft_path = sft_path
    use_cuda = p.has_cuda and (not p.sft or sft_path == "serving")
    p.dev = p.torch.device("cuda") if use_cuda else p.torch.device("cpu")


def _forward(p, x, ids, w):
    """One forward of the wrapper through the path _pick_forward_path chose."""
    torch, wrapper, dev = p.torch, p.wrapper, p.dev
    if p.sft and p.sft_path == "serving":
        stream = torch.cuda.current_stream().cuda_stream
        wrapper.submit_forward_inference(x, ids.to(dev), w.to(dev), stream)
        out = wrapper.sync_forward_inference(stream)
        torch.cuda.synchronize()
        return out
    if p.sft:
        wrapper.submit_forward(x, ids, w, save_for_backward=False)
        return wrapper.sync_forward()  # output_device=None: a CPU tensor
    if dev.type == "cuda":
        stream = torch.cuda.current_stream().cuda_stream
        out = wrapper.forward(x, ids.to(dev), w.to(dev), stream)
        torch.cuda.synchronize()
        return out
    os.environ["KT_FORCE_SYNC_SUBMIT"] = "1"  # no stream: use kt-kernel's synchronous path
    return wrapper.forward(x, ids, w, 0)


def _bench(p, qlen, warmup, repeats):
    """Time ``repeats`` forwards at ``qlen`` after ``warmup``; keep the inputs and a CPU copy of the output."""
    torch = p.torch
    try:
        x = torch.randn((qlen, p.H), generator=p.gen).to(torch.bfloat16)
        ids, w = _routing(torch, qlen, p.spec, p.gen)
        xd = x.to(p.dev)
        out = None
        for _ in range(warmup):
            out = _forward(p, xd, ids, w)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = _forward(p, xd, ids, w)
            times.append(time.perf_counter() - t)
        entry = {"qlen": qlen, "times_s": [round(v, 7) for v in times], "median_s": _median(times)}
        entry["tokens_per_s"] = qlen / entry["median_s"] if entry["median_s"] else None
        entry["output_device"] = str(out.device) if out is not None else None
        # keep a CPU copy: the wrapper reuses its output buffers
        return entry, (x, ids, w, out.detach().to("cpu", copy=True) if out is not None else None)
    except Exception as e:  # noqa: BLE001
        raise p.fail(e)


def _decode_run(p):
    """Time decode (qlen 1)."""
    spec = p.spec
    dec, keep = _bench(p, 1, int(spec.get("warmup", 3)), int(spec.get("decode_repeats", spec.get("repeats", 20))))
    p.result["decode"] = dec
    return dec, keep


def _prefill_run(p):
    """Time prefill at prefill_qlen (default: chunked_prefill_size); None when prefill_qlen is 0."""
    if p.prefill_qlen <= 0:
        return None
    spec = p.spec
    pre, keep = _bench(p, p.prefill_qlen, int(spec.get("prefill_warmup", 1)), int(spec.get("prefill_repeats", 3)))
    p.result["prefill"] = pre
    return pre, keep


def _sft_forward_device(p):
    """In SFT mode, record where the plain forward() (training API) puts its output, whichever path was timed."""
    if not p.sft:
        return
    torch = p.torch
    try:
        x1 = torch.randn((1, p.H), generator=p.gen).to(torch.bfloat16)
        i1, w1 = _routing(torch, 1, p.spec, p.gen)
        p.result["sft_forward_output_device"] = str(p.wrapper.forward(x1, i1, w1, save_for_backward=False).device)
    except Exception as e:  # noqa: BLE001
        p.result["notes"].append(f"SFT forward() check failed: {type(e).__name__}: {e}")


def _compare_with_reference(p, runs):
    """Set each timed run's rel_err against the float32 torch reference (when checked and bf16 weights exist)."""
    if not (bool(p.spec.get("check", True)) and p.gate is not None):
        return
    # After all timing, with torch's own pool widened (it is idle during the timing).
    p.result["stage"] = "reference"
    try:
        p.torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    except Exception:  # noqa: BLE001
        pass
    for entry, (x, ids, w, out) in runs:
        # "reference_lora_scaling" is a test hook: a wrong scaling must make the check fail.
        ref_scaling = float(p.spec.get("reference_lora_scaling", p.scaling))
        ref = _reference(p.torch, x, ids, w, p.gate, p.up, p.down, p.lora, ref_scaling)
        entry["rel_err"] = _rel_err(p.torch, out, ref)


def _verdict(p):
    """Fill passed/rel_err/tolerance from the runs' errors; a gross mismatch is a ProbeError."""
    result, method = p.result, p.method
    result["stage"] = "check"
    tol = float(p.spec.get("tolerance") or TOLERANCE[p.family])
    result["tolerance"] = tol
    errs = [e["rel_err"] for e in (result.get("decode"), result.get("prefill")) if e and "rel_err" in e]
    result["output_device"] = result["decode"]["output_device"]
    if errs:
        worst = max(errs)
        result["rel_err"] = worst
        if not worst <= GROSS:
            raise ProbeError("mismatch", f"{method}: output does not match the torch reference "
                                         f"(relative error {worst:.3g}, gross-mismatch limit {GROSS})")
        result["passed"] = worst <= tol
        if not result["passed"]:
            result["error_kind"] = "tolerance"
            result["error"] = f"{method}: relative error {worst:.3g} exceeds the {p.family} tolerance {tol}"
    else:
        result["rel_err"] = None
        result["passed"] = True
        if bool(p.spec.get("check", True)):
            result["notes"].append("no bf16 reference for these weights: accuracy not checked")
    result["stage"] = "done"


def run(spec, result):
    """Probe one point, stage by stage, filling ``result``; a failing stage raises ProbeError."""
    p = _import_stage(spec, result)
    _parse_spec(p)
    _weight_stage(p)
    _lora_stage(p)
    _build_wrapper(p)
    _load_weights(p)
    _pick_forward_path(p)
    runs = [_decode_run(p)]
    prefill = _prefill_run(p)
    if prefill is not None:
        runs.append(prefill)
    _sft_forward_device(p)
    _compare_with_reference(p, runs)
    _verdict(p)


def main():
    # Keep our stdout for the one JSON result; everything else (incl. C++ printf) goes to stderr.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    result = {"worker_version": WORKER_VERSION, "ok": False, "passed": False, "error_kind": None,
              "error": None, "notes": [], "python": sys.executable, "pid": os.getpid(),
              "python_version": ".".join(map(str, sys.version_info[:3]))}
    try:
        spec = json.loads(sys.stdin.read() or "{}")
        if not isinstance(spec, dict):
            raise ProbeError("invalid_config", "spec must be a JSON object")
        result["spec"] = spec
        for key in ("method", "cpuinfer", "threadpool_count", "chunked_prefill_size", "num_experts",
                    "top_k", "hidden_size", "moe_intermediate_size"):
            if key not in spec:
                raise ProbeError("invalid_config", f"spec lacks {key!r}")
        run(spec, result)
        result["ok"] = True
    except ProbeError as e:
        result["error_kind"], result["error"] = e.kind, e.message
        result["passed"] = False
    except Exception as e:  # noqa: BLE001
        result["error_kind"] = "error"
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc(limit=8)
        result["passed"] = False
    finally:
        tmp = result.get("tmpdir")
        if tmp and not (isinstance(result.get("spec"), dict) and result["spec"].get("keep_tmp")):
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    data = (json.dumps(result, default=str) + "\n").encode()
    os.write(out_fd, data)
    os.close(out_fd)
    sys.stderr.flush()
    # kt-kernel's worker threads can hang interpreter teardown; the result is written.
    os._exit(0)


if __name__ == "__main__":
    main()
