"""Known ways an SGLang + kt-kernel start dies, recognised in its output: pure data and one matcher.

Each signature is a regex over one log line (or the way the process died) mapped to a finding with the fix.
`CUDA out of memory` is told apart by the start-up stage seen before it: loading weights, allocating the
KV cache, or capturing CUDA graphs (SGLang logs `Load weight begin/end`, `KV Cache is allocated`,
`Capture cuda graph begin`). The supervisor feeds the lines it kept (those that matched a phase or a
signature before ready, then the log tail) and prints what this returns after the tail.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kt_launch.core.findings import Finding, error


@dataclass(frozen=True)
class Signature:
    key: str  # one finding per key and death
    pattern: re.Pattern[str]
    explain: Callable[[Mapping[str, Any], str, str], Finding]  # (plan values, stage, the line) -> finding


def _v(values: Mapping[str, Any], key: str) -> Any:
    return values.get(key)


def _half(values: Mapping[str, Any], key: str, flag: str) -> str:
    n = _v(values, key)
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return f"{key} is {n} in this plan: try {n // 2} (--set {key}={n // 2}; --dry-run's memory table shows the fit)"
    return f"set {key} lower (--set {key}=N{flag})"


def _empty(values, stage, line) -> Finding:
    return error("KT-E540", "SGLang died in torch.empty(None, ...): kt.num_gpu_experts reached the server as None "
                 "(sglang-kt's KT EP wrapper sizes its GPU experts from --kt-num-gpu-experts)",
                 "set kt.num_gpu_experts (0 = every routed expert on the CPU), e.g. --set kt.num_gpu_experts=0, "
                 "and check with --dry-run that --kt-num-gpu-experts is in the command")


def _cpuinfer(values, stage, line) -> Finding:
    return error("KT-E541", "KTMoEWrapper got no CPU thread count (kt_cpuinfer / cpuinfer_threads is None)",
                 "set kt.cpuinfer (the usable physical cores minus a few for SGLang), e.g. --set kt.cpuinfer=N; "
                 "--dry-run shows the value kt-launch derives when it knows the host")


def _header(values, stage, line) -> Finding:
    return error("KT-E542", "a .safetensors file could not be read (`header too large`): usually a torch.save "
                 "(pickle/zip) file named .safetensors, often in a LoRA adapter dir",
                 "run `kt-launch check` on the profile: it names the file by its bytes (KT-E206); rename it to .pt "
                 "or convert it with safetensors.torch.save_file")


def _device(values, stage, line) -> Finding:
    lora = _v(values, "moe_lora.path") is not None
    return error("KT-E543", "tensors on two devices" + (" under CUDA graphs in MoE-LoRA mode (the CPU expert LoRA "
                 "path cannot be captured)" if lora else " (`Expected all tensors to be on the same device`)"),
                 "disable CUDA graphs: --set server.disable_cuda_graph=true (MoE-LoRA runs its experts on the CPU)"
                 if lora else "if CUDA graphs are on, try --set server.disable_cuda_graph=true; else report the "
                 "traceback with the --dry-run plan")


def _oom(values, stage, line) -> Finding:
    if stage == "weights":
        return error("KT-E544", "CUDA out of memory while loading weights: the GPU experts and the non-expert "
                     "weights do not fit", _half(values, "kt.num_gpu_experts", "") + "; or more GPUs "
                     "(server.tp_size)")
    if stage == "kv":
        return error("KT-E545", "CUDA out of memory while allocating the KV cache",
                     _half(values, "server.max_total_tokens", "") + "; or lower server.mem_fraction_static "
                     "(--set server.mem_fraction_static=0.80)")
    if stage == "graph":
        return error("KT-E546", "CUDA out of memory while capturing CUDA graphs",
                     "lower server.mem_fraction_static (--set server.mem_fraction_static=0.80) to leave the graphs "
                     "room, or --set server.disable_cuda_graph=true; "
                     + _half(values, "server.max_running_requests", ""))
    return error("KT-E547", "CUDA out of memory (the start-up stage is unknown)",
                 "see `kt-launch --dry-run`'s memory table; " + _half(values, "kt.num_gpu_experts", ""))


def _sigill(values, stage, line) -> Finding:
    return error("KT-E548", "Illegal instruction: the kt-kernel build uses CPU instructions this CPU lacks "
                 "(an AMX or AVX-512 variant on an AVX2 CPU, or a build made for another machine)",
                 "run `kt-launch doctor` for the variant this CPU gets; reinstall kt-kernel for it (or build it "
                 "here with CPUINFER_CPU_INSTRUCT set to that variant), and pick a kt.method it implements")


def _numa(values, stage, line) -> Finding:
    return error("KT-E549", "binding to a NUMA node failed (kt.numa_nodes names a node this process may not use, or "
                 "libnuma / the container forbids it)",
                 "run `kt-launch doctor` for the usable NUMA nodes and set kt.numa_nodes / kt.threadpool_count to "
                 "them; in a container allow mbind (--cap-add SYS_NICE) or drop the binding")


def _port(values, stage, line) -> Finding:
    port = _v(values, "server.port")
    where = f"port {port}" if port else "a port SGLang listens on"
    return error("KT-E550", f"{where} is already in use: another server took it after kt-launch's check (or "
                 "SGLang's own internal ports collided)",
                 "stop the other server or pick a free port (--set server.port=...); kt-launch checks the port "
                 "before the start, so a second one appearing later points at a race or SGLang's NCCL/ZMQ ports")


SIGNATURES: tuple[Signature, ...] = (
    Signature("empty", re.compile(r"empty\(\) received an invalid combination of arguments"), _empty),
    Signature("cpuinfer", re.compile(r"(kt_cpuinfer|cpuinfer_threads|cpuinfer)\b.*\bNone(Type)?\b"
                                     r"|\bNone(Type)?\b.*\b(kt_cpuinfer|cpuinfer_threads)\b", re.I), _cpuinfer),
    Signature("header", re.compile(r"header too large|HeaderTooLarge", re.I), _header),
    Signature("device", re.compile(r"Expected all tensors to be on the same device"), _device),
    Signature("oom", re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"), _oom),
    Signature("sigill", re.compile(r"Illegal instruction"), _sigill),
    Signature("numa", re.compile(r"(numa_run_on_node|numa_bind|set_mempolicy|mbind|numa_alloc\w*|libnuma)\b.*"
                                 r"(fail|error|denied|not permitted|invalid)"
                                 r"|(fail\w*|error)\b.*\b(bind|binding)\b.*\bnuma", re.I), _numa),
    Signature("port", re.compile(r"Address already in use|\[Errno 98\]"), _port),
)

# Stage markers of an SGLang start-up: the last one seen before a CUDA OOM says what was being allocated.
STAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Load weight begin|Loading safetensors|checkpoint shards", re.I), "weights"),
    (re.compile(r"Load weight end|Memory pool|init memory pool|KV Cache is|max_total_num_tokens", re.I), "kv"),
    (re.compile(r"Capture cuda graph|Capturing batches", re.I), "graph"),
    (re.compile(r"Capture cuda graph end|Uvicorn running|server is fired up", re.I), "serving"),
)
# One regex the supervisor runs over its children's output until ready, to keep the lines worth matching.
ANY_SIGNATURE = "|".join(f"(?i:{s.pattern.pattern})" if s.pattern.flags & re.I else f"(?:{s.pattern.pattern})"
                         for s in SIGNATURES)


def stage_of(line: str, current: str) -> str:
    for pattern, stage in reversed(STAGES):  # "Capture cuda graph end" before "Capture cuda graph"
        if pattern.search(line):
            return stage
    return current


def explain(lines: Iterable[str], values: Mapping[str, Any] | None = None, died_by: int | None = None) -> list[Finding]:
    """The findings for a server that died after printing `lines` (in order), killed by `died_by` if a signal."""
    values = values or {}
    stage, seen, out = "start", set(), []
    for line in lines:
        stage = stage_of(line, stage)
        for sig in SIGNATURES:
            if sig.key not in seen and sig.pattern.search(line):
                seen.add(sig.key)
                out.append(sig.explain(values, stage, line))
    if died_by == signal.SIGILL and "sigill" not in seen:
        out.append(_sigill(values, stage, ""))
    return out
