"""Launcher side of the kt-kernel probe: spec in, result out, findings from the result.

The launcher never imports torch or kt_kernel. `run_probe` starts the standalone worker file
`probe_worker.py` in the *target* interpreter (the Python that will run SGLang) through the one worker
client (`kt_launch.facts.worker`), writes one JSON spec to its stdin and reads one JSON result from its
stdout. Timeouts (the whole process group is killed), crashes (SIGILL from a wrong CPU variant, aborts
in the C++ pool) and a missing kt_kernel all come back as a `ProbeResult` with `error_kind` and a
message, never a traceback.

The CPU variant kt-kernel loads is decided by `KT_KERNEL_CPU_VARIANT` in the worker's environment:
the spec's `cpu_variant_override` when set, else the value inherited from the environment the probe
runs with (as the server would inherit it). `run_probe` writes the effective value into the spec, so
the result and its findings say which variant was forced and by what.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from kt_launch.facts import worker as _worker
from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.methods import METHODS
from kt_launch.resolve.methods import NEVER_AVAILABLE, effective_method, is_sft

WORKER_PATH = Path(__file__).with_name("probe_worker.py").resolve()

# error_kind values the worker or this module report
KT_KERNEL_MISSING = "kt_kernel_missing"
TORCH_MISSING = "torch_missing"
KT_KERNEL_BROKEN = "kt_kernel_broken"
METHOD_UNAVAILABLE = "method_unavailable"
INVALID_CONFIG = "invalid_config"
WEIGHTS = "weights"
MISMATCH = "mismatch"  # gross mismatch: the kernel is not computing the layer
TOLERANCE = "tolerance"  # ran, but the error is above the method's tolerance
CRASHED = "crashed"
TIMEOUT = "timeout"
NO_INTERPRETER = "no_interpreter"
NO_RESULT = "no_result"
ERROR = "error"

DEFAULT_CHUNK = 8192  # SGLang's default chunked_prefill_size on large-memory GPUs
VARIANT_ENV = "KT_KERNEL_CPU_VARIANT"


def is_sft_method(method: str) -> bool:
    """From the method table (core/methods.py), not from the name."""
    return is_sft(method)


def _skips_lora(method: str) -> bool:
    """The method table's `skip_lora` (an unknown name: judged as one that needs a LoRA rank)."""
    row = METHODS.get(method)
    return row is not None and row.skip_lora


@dataclass(frozen=True)
class ProbeSpec:
    """One probe point: what kt-kernel is built with, for one MoE layer of the model's shape."""

    method: str
    cpuinfer: int
    threadpool_count: int
    hidden_size: int
    moe_intermediate_size: int
    num_experts: int
    top_k: int
    chunked_prefill_size: int = DEFAULT_CHUNK
    numa_nodes: tuple[int, ...] | None = None
    lora_rank: int | None = None  # SFT methods only; None = 16
    lora_alpha: float | None = None  # SFT methods only; None = 2 * rank
    weight_path: str | None = None  # None = synthetic bf16 weights
    layer_idx: int = 0  # with weight_path: the first MoE layer of the checkpoint
    prefill_qlen: int | None = None  # None = chunked_prefill_size; 0 = decode only
    decode_repeats: int = 20
    prefill_repeats: int = 3
    warmup: int = 3
    check: bool = True  # compare with the torch reference
    seed: int = 1234
    tolerance: float | None = None  # None = the worker's per-method default
    cpu_variant_override: str | None = None  # sets KT_KERNEL_CPU_VARIANT in the worker's environment
    weight_source: str = "auto"  # auto | tensors | hf_dir | kt_files
    # SFT only: "forward" (training API forward(): CPU output) | "serving" (submit/sync_forward_inference
    # on a CUDA stream: GPU output, as SGLang serves) | "auto" (serving when CUDA is available)
    sft_path: str = "auto"
    extra: tuple[tuple[str, Any], ...] = ()  # more worker spec keys (test hooks), as (key, value) pairs

    def __post_init__(self) -> None:
        if self.numa_nodes is not None:
            object.__setattr__(self, "numa_nodes", tuple(int(n) for n in self.numa_nodes))

    @property
    def sft(self) -> bool:
        return is_sft_method(self.method)

    def validate(self) -> list[str]:
        """Problems kt-kernel would hit with this spec (checked before starting a process)."""
        p = []
        if self.cpuinfer < 1:
            p.append(f"cpuinfer={self.cpuinfer}: kt-kernel needs at least 1 thread")
        if self.threadpool_count < 1:
            p.append(f"threadpool_count={self.threadpool_count}: kt-kernel needs at least 1 pool")
        elif self.cpuinfer < self.threadpool_count:
            p.append(f"cpuinfer={self.cpuinfer} < threadpool_count={self.threadpool_count}: pools without threads")
        if self.numa_nodes is not None and len(self.numa_nodes) != self.threadpool_count:
            p.append(f"numa_nodes has {len(self.numa_nodes)} entries, threadpool_count is {self.threadpool_count}")
        if self.chunked_prefill_size <= 0:
            p.append(f"chunked_prefill_size={self.chunked_prefill_size}: every kt-kernel forward would fail")
        if self.prefill_qlen and self.prefill_qlen > self.chunked_prefill_size:
            p.append(f"prefill_qlen={self.prefill_qlen} > chunked_prefill_size={self.chunked_prefill_size}")
        for name in ("hidden_size", "moe_intermediate_size", "num_experts", "top_k"):
            if getattr(self, name) <= 0:
                p.append(f"{name}={getattr(self, name)} must be positive")
        if self.top_k > self.num_experts:
            p.append(f"top_k={self.top_k} > num_experts={self.num_experts}")
        if self.sft and self.lora_rank is not None and self.lora_rank <= 0 and not _skips_lora(self.method):
            p.append(f"lora_rank={self.lora_rank} must be positive for {self.method}")
        return p

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["numa_nodes"] = list(self.numa_nodes) if self.numa_nodes is not None else None
        extra = dict(d.pop("extra") or ())
        d.update(extra)
        return d

    def with_threads(self, cpuinfer: int, threadpool_count: int | None = None,
                     numa_nodes: Sequence[int] | None = None) -> "ProbeSpec":
        return replace(self, cpuinfer=cpuinfer,
                       threadpool_count=self.threadpool_count if threadpool_count is None else threadpool_count,
                       numa_nodes=tuple(numa_nodes) if numa_nodes is not None else None)

    @classmethod
    def for_model(cls, model: Any, method: str, cpuinfer: int, threadpool_count: int = 1, **kw: Any) -> "ProbeSpec":
        """From `kt_launch.facts.model.ModelFacts` (anything with its four shape attributes)."""
        if "layer_idx" not in kw and kw.get("weight_path") and getattr(model, "moe_layers", None):
            kw["layer_idx"] = model.moe_layers[0]
        return cls(method=method, cpuinfer=cpuinfer, threadpool_count=threadpool_count,
                   hidden_size=model.hidden_size, moe_intermediate_size=model.moe_intermediate_size,
                   num_experts=model.num_experts, top_k=model.top_k, **kw)


def plan_chunk(plan: Any) -> int:
    """The chunked_prefill_size the launched server runs with: the user's, else SGLang's own default for these GPUs
    (the memory plan's, server_args.py `_handle_gpu_memory_settings`), so the probe sizes kt-kernel's buffers alike."""
    user = plan.get("server.chunked_prefill_size")
    if user:
        return int(user)
    memory = getattr(plan, "memory", None)
    return int(memory.chunked_prefill_size) if memory is not None and memory.chunked_prefill_size > 0 else DEFAULT_CHUNK


def spec_from_plan(plan: Any, model: Any, *, use_weights: bool = False, **overrides: Any) -> ProbeSpec:
    """Build the spec the resolved plan implies (the values SGLang would hand KTMoEWrapper).

    plan: `kt_launch.core.plan.LaunchPlan` (read through `plan.get(key)`); model: `ModelFacts`.
    MoE-LoRA plans (moe_lora.sft_method set) probe the SFT wrapper with moe_lora.rank/alpha.
    use_weights=True probes the real first MoE layer under kt.weight_path (or model.path for BF16 SFT).
    """
    sft_method = plan.get("moe_lora.sft_method")
    method = effective_method(plan.get)
    numa = plan.get("kt.numa_nodes")
    kw: dict[str, Any] = dict(
        chunked_prefill_size=plan_chunk(plan),
        numa_nodes=tuple(numa) if numa else None,
    )
    if sft_method:
        kw["lora_rank"] = plan.get("moe_lora.rank")
        kw["lora_alpha"] = plan.get("moe_lora.alpha")
    if use_weights:
        wp = plan.get("kt.weight_path")
        if sft_method and "BF16" in sft_method:
            wp = plan.get("model.path") or wp
        kw["weight_path"] = wp
    kw.update(overrides)
    return ProbeSpec.for_model(model, method, int(plan.get("kt.cpuinfer") or 1),
                               int(plan.get("kt.threadpool_count") or 1), **kw)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool  # the worker ran to the end (forwards done)
    passed: bool  # ok and the output matched the reference within tolerance
    method: str
    cpuinfer: int
    threadpool_count: int
    numa_nodes: tuple[int, ...] | None = None
    cpu_variant: str | None = None
    kt_kernel_version: str | None = None
    torch_version: str | None = None
    python: str | None = None
    decode_median_s: float | None = None
    decode_tokens_per_s: float | None = None
    prefill_qlen: int | None = None
    prefill_median_s: float | None = None
    prefill_tokens_per_s: float | None = None
    rel_err: float | None = None
    tolerance: float | None = None
    output_device: str | None = None
    error_kind: str | None = None
    error: str | None = None
    stage: str | None = None
    accelerator: str | None = None
    weight_source: str | None = None
    wall_s: float | None = None
    notes: tuple[str, ...] = ()
    stderr_tail: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sft(self) -> bool:
        return is_sft_method(self.method)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("raw")
        d["numa_nodes"] = list(self.numa_nodes) if self.numa_nodes is not None else None
        d["notes"] = list(self.notes)
        d["decode_times_s"] = (self.raw.get("decode") or {}).get("times_s")
        d["prefill_times_s"] = (self.raw.get("prefill") or {}).get("times_s")
        return d

    @classmethod
    def from_worker(cls, spec: ProbeSpec, data: Mapping[str, Any], stderr_tail: str = "",
                    wall_s: float | None = None) -> "ProbeResult":
        dec = data.get("decode") if isinstance(data.get("decode"), dict) else {}
        pre = data.get("prefill") if isinstance(data.get("prefill"), dict) else {}
        return cls(
            ok=bool(data.get("ok")), passed=bool(data.get("ok")) and bool(data.get("passed")),
            method=spec.method, cpuinfer=spec.cpuinfer, threadpool_count=spec.threadpool_count,
            numa_nodes=spec.numa_nodes,
            cpu_variant=data.get("cpu_variant"), kt_kernel_version=data.get("kt_kernel_version"),
            torch_version=data.get("torch_version"), python=data.get("python"),
            decode_median_s=dec.get("median_s"), decode_tokens_per_s=dec.get("tokens_per_s"),
            prefill_qlen=pre.get("qlen"), prefill_median_s=pre.get("median_s"),
            prefill_tokens_per_s=pre.get("tokens_per_s"),
            rel_err=data.get("rel_err"), tolerance=data.get("tolerance"),
            output_device=data.get("output_device"), error_kind=data.get("error_kind"), error=data.get("error"),
            stage=data.get("stage"), accelerator=data.get("accelerator"), weight_source=data.get("weight_source"),
            wall_s=wall_s, notes=tuple(data.get("notes") or ()), stderr_tail=stderr_tail, raw=dict(data),
        )

    @classmethod
    def failure(cls, spec: ProbeSpec, kind: str, message: str, stderr_tail: str = "",
                wall_s: float | None = None, python: str | None = None) -> "ProbeResult":
        return cls(ok=False, passed=False, method=spec.method, cpuinfer=spec.cpuinfer,
                   threadpool_count=spec.threadpool_count, numa_nodes=spec.numa_nodes,
                   error_kind=kind, error=message, stderr_tail=stderr_tail, wall_s=wall_s, python=python)


def effective_variant_override(spec: ProbeSpec, base: Mapping[str, str] | None = None) -> str | None:
    """The `KT_KERNEL_CPU_VARIANT` the worker gets: the spec's, else the one inherited from `base`."""
    if spec.cpu_variant_override:
        return spec.cpu_variant_override
    env = os.environ if base is None else base
    return env.get(VARIANT_ENV) or None


def worker_env(spec: ProbeSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.pop(VARIANT_ENV, None)
    variant = effective_variant_override(spec, base)
    if variant:
        env[VARIANT_ENV] = variant
    env.setdefault("PYTHONUNBUFFERED", "1")
    # kt-kernel's pool is the compute; keep torch's own pool (reference only) from competing with it.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


_SIGILL_HINT = " (an instruction this CPU lacks: a forced KT_KERNEL_CPU_VARIANT or a mis-detected variant)"


def run_probe(spec: ProbeSpec, python: str, timeout_s: float = 600.0,
              env: Mapping[str, str] | None = None) -> ProbeResult:
    """Run one probe point in `python` (the target interpreter). Never raises for probe failures.

    env: the environment the server would run with (default: this process's)."""
    problems = spec.validate()
    if problems:
        return ProbeResult.failure(spec, INVALID_CONFIG, "; ".join(problems), python=python)
    if not WORKER_PATH.is_file():
        return ProbeResult.failure(spec, ERROR, f"probe worker missing at {WORKER_PATH}", python=python)
    spec = replace(spec, cpu_variant_override=effective_variant_override(spec, env))
    # "sft" from the method table: the worker cannot import kt_launch
    stdin = json.dumps({**spec.to_json(), "sft": is_sft(spec.method)})
    r = _worker.run_worker(python, WORKER_PATH, stdin=stdin, env=worker_env(spec, env),
                           timeout_s=timeout_s, stderr_tail_chars=2000)
    if r.answer is not None:
        return ProbeResult.from_worker(spec, r.answer, r.stderr_tail, r.seconds)
    if r.error_kind == _worker.NOT_FOUND:
        return ProbeResult.failure(spec, NO_INTERPRETER, r.message, python=python)
    if r.error_kind == _worker.TIMEOUT:
        return ProbeResult.failure(spec, TIMEOUT, f"probe did not finish within {timeout_s:g} s "
                                   f"({spec.method}, cpuinfer={spec.cpuinfer})", r.stderr_tail, r.seconds, python)
    if r.error_kind == _worker.CRASHED:
        how = "died with" if r.returncode is not None and r.returncode < 0 else \
            f"exited with status {r.returncode} ="
        msg = f"probe worker {how} {r.signal}" + (_SIGILL_HINT if r.signal == "SIGILL" else "")
        return ProbeResult.failure(spec, CRASHED, msg, r.stderr_tail, r.seconds, python)
    return ProbeResult.failure(spec, NO_RESULT, f"probe worker {r.message}", r.stderr_tail, r.seconds, python)


# ------------------------------------------------------------------------------------------
# Findings
# ------------------------------------------------------------------------------------------

def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def probe_summary(r: ProbeResult) -> str:
    parts = [f"{r.method} on kt-kernel {r.kt_kernel_version or '?'} CPU variant '{r.cpu_variant or '?'}'",
             f"cpuinfer={r.cpuinfer}, threadpool_count={r.threadpool_count}"
             + (f", numa_nodes={list(r.numa_nodes)}" if r.numa_nodes is not None else "")]
    if r.decode_median_s is not None:
        parts.append(f"decode {r.decode_median_s * 1e3:.2f} ms/layer ({_fmt_rate(r.decode_tokens_per_s)} tok/s)")
    if r.prefill_median_s is not None:
        parts.append(f"prefill {r.prefill_qlen} tokens {r.prefill_median_s * 1e3:.1f} ms/layer "
                     f"({_fmt_rate(r.prefill_tokens_per_s)} tok/s)")
    if r.rel_err is not None:
        parts.append(f"relative error {r.rel_err:.3g} (tolerance {r.tolerance})")
    return "; ".join(parts)


def probe_findings(r: ProbeResult) -> list[Finding]:
    """KT-E4xx / KT-W4xx / KT-I4xx findings for one probe result."""
    out: list[Finding] = []
    k = r.error_kind
    py = r.python or "the target interpreter"
    if k in (KT_KERNEL_MISSING, TORCH_MISSING):
        what = "kt_kernel" if k == KT_KERNEL_MISSING else "torch"
        out.append(error("KT-E401", r.error if (r.error or "").startswith(what) else
                         f"{what} is not importable in {py}: {r.error}",
                         f"install it into that interpreter (`{py} -m pip install kt-kernel==0.7.2`) "
                         "or point runtime.python at the environment that has it"))
    elif k == KT_KERNEL_BROKEN:
        out.append(error("KT-E401", f"kt_kernel is installed in {py} but does not load: {r.error}",
                         "reinstall kt-kernel for this Python and CPU; KT_KERNEL_DEBUG=1 shows the variant search"))
    elif k == NO_INTERPRETER:
        out.append(error("KT-E409", r.error or "interpreter not found", "set runtime.python to an existing python"))
    elif k == METHOD_UNAVAILABLE:
        forced = (r.raw.get("spec") or {}).get("cpu_variant_override")
        how = "forced by KT_KERNEL_CPU_VARIANT" if forced else "that loads on this host"
        out.append(error("KT-E402", f"kt.method {r.method}: not implemented by the kt-kernel CPU variant "
                         f"'{r.cpu_variant}' {how} ({r.error})",
                         _method_fix(r)))
    elif k == INVALID_CONFIG:
        out.append(error("KT-E404", f"kt-kernel rejected the configuration for {r.method}: {r.error}",
                         "fix the named value (kt.cpuinfer, kt.threadpool_count, kt.numa_nodes, chunk size)"))
    elif k == WEIGHTS:
        out.append(error("KT-E405", f"{r.method}: loading expert weights failed: {r.error}",
                         "check kt.weight_path against the method's expected layout (`kt-launch check`)"))
    elif k == MISMATCH:
        out.append(error("KT-E403", f"{r.error}; kt-kernel is not computing this MoE layer correctly",
                         "try another kt.method or CPU variant; report it upstream with `kt-launch probe --json`"))
    elif k == CRASHED:
        out.append(error("KT-E406", f"{r.method} with cpuinfer={r.cpuinfer}: {r.error}",
                         "unset KT_KERNEL_CPU_VARIANT if forced; check kt.numa_nodes exist on this host"))
    elif k == TIMEOUT:
        out.append(error("KT-E407", r.error or "probe timed out",
                         "raise --timeout, or lower the chunk size for the probe"))
    elif k in (NO_RESULT, ERROR):
        out.append(error("KT-E408", f"probe of {r.method} failed: {r.error}",
                         "run `kt-launch probe --json` and read stderr_tail"))
    elif k == TOLERANCE:
        out.append(warning("KT-W401", f"{r.error}; the layer runs but its numbers are off more than expected",
                           "compare with a BF16 method; use real weights (--weights) to rule out synthetic data"))
    if r.ok:
        out.append(info("KT-I401", probe_summary(r)))
        if r.cpu_variant and r.cpu_variant != "amx":
            out.append(warning("KT-W402", f"kt-kernel loaded its '{r.cpu_variant}' variant, not 'amx': AMX methods "
                               "run on AVX-512/AVX2 fallbacks and are much slower",
                               "run on a CPU with amx_tile/amx_int8/amx_bf16 for serving speed"))
        if r.sft:
            fwd = r.raw.get("sft_forward_output_device") or r.output_device or "cpu"
            path = r.raw.get("sft_path") or "forward"
            msg = f"{r.method} (MoE-LoRA): the SFT wrapper's forward() returns its output on {fwd}"
            if path == "serving":
                msg += (f"; the serving path (submit/sync_forward_inference) that was timed stages it through "
                        f"pinned CPU buffers into {r.output_device}")
            out.append(info("KT-I402", msg + "; CUDA graphs stay off in this mode"))
        if r.rel_err is None and r.raw.get("spec", {}).get("check", True):
            out.append(info("KT-I403", "accuracy not checked: no bf16 reference for these weights"))
        if r.raw.get("pin_shim"):
            out.append(info("KT-I404", "no accelerator in the probe interpreter: kt-kernel's pinned buffers were "
                            "replaced by plain CPU memory; timings exclude GPU copies"))
    return out


def _method_fix(r: ProbeResult) -> str:
    if r.sft:
        return "use AMXBF16_SFT (available in the amx and avx512_bf16 variants) or run on an AMX CPU"
    if r.method in NEVER_AVAILABLE:
        return "no CPU variant of kt-kernel 0.7.2 implements this method; use AMXINT8/AMXINT4 or BF16"
    return "on AVX2-only CPUs use BF16, FP8, GPTQ_INT4 or RAWINT4 weights; AMXINT4/AMXINT8 need AVX-512 or AMX"
