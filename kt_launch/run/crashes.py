"""Known ways an SGLang + kt-kernel start dies, recognised in its output: pure data and one matcher.

Each signature is a regex over one log line (or the way the process died) mapped to a finding with the fix.
`CUDA out of memory` is told apart by the start-up stage seen before it: loading weights, allocating the
KV cache, or capturing CUDA graphs (SGLang logs `Load weight begin/end`, `KV Cache is allocated`,
`Capture cuda graph begin`). The supervisor feeds the lines it kept (those that matched a phase or a
signature before ready, then the log tail) and prints what this returns after the tail.

Every pattern is a run/matching.py `Rx` (linear on any line: bounded window, substring prefilter, anchored or
repeat-free). A signature matches the real error line (an exception line, `Error: ...`), never a dump of
values: SGLang's own `server_args=ServerArgs(...)` line holds `None` next to every kt option. The advice reads
the plan that was launched (its values and argv): a flag kt-launch passed is not advice to set it.
"""

from __future__ import annotations

import collections
import re
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kt_launch.core.findings import Finding, error
from kt_launch.core.options import BY_KEY
from kt_launch.run.matching import Rx, rx, window

ANY_STAGE = frozenset({"start", "weights", "kv", "graph", "serving"})


@dataclass(frozen=True)
class Signature:
    key: str  # one finding per key and death
    pattern: Rx
    explain: Callable[["Launched", str, str], Finding]  # (the launched plan, stage, the line) -> finding
    # the stages in which this crash is caused by the configuration: the same argv dies the same way again,
    # so --restart on-failure does not restart it (a CUDA OOM at weight load; not a port someone else took)
    deterministic: frozenset[str] = frozenset()
    after: Rx | None = None  # a line that must come shortly before (the traceback frame of the error line)


@dataclass(frozen=True)
class Launched:
    """What kt-launch started: the plan's values and the argv (crash advice reads both)."""

    values: Mapping[str, Any]
    argv: Sequence[str] = ()

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def passed(self, key: str) -> tuple[str, str] | None:
        """(flag, value) when the argv carries `key`'s flag (any flavour's name for it), else None."""
        names = {n for r in BY_KEY[key].render.values() for n in getattr(r, "names", ())}
        argv = list(self.argv)
        for i, a in enumerate(argv):
            if a in names and i + 1 < len(argv):
                return a, argv[i + 1]
            if "=" in a and a.split("=", 1)[0] in names:
                return a.split("=", 1)[0], a.split("=", 1)[1]
        return None


@dataclass(frozen=True)
class Diagnosis:
    """What the output of a dead server says: the findings, and whether the configuration caused the crash."""

    findings: list[Finding]
    deterministic: bool = False
    because: str = ""  # the finding code that makes it deterministic


def _v(values: "Launched", key: str) -> Any:
    return values.get(key)


def _half(values: Mapping[str, Any], key: str, flag: str) -> str:
    n = _v(values, key)
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return f"{key} is {n} in this plan: try {n // 2} (--set {key}={n // 2}; --dry-run's memory table shows the fit)"
    return f"set {key} lower (--set {key}=N{flag})"


def _not_taken(flag: str, value: str) -> str:
    return (f"kt-launch passed {flag} {value}, yet the server saw None: the installed SGLang did not take the flag "
            "(an SGLang without the kt options, or one that drops them); check runtime.python's SGLang with "
            "`kt-launch doctor` and install sglang-kt 0.7.2 there")


def _empty(values, stage, line) -> Finding:
    passed = values.passed("kt.num_gpu_experts")
    return error("KT-E540", "SGLang died in torch.empty(None, ...): kt.num_gpu_experts reached the server as None "
                 "(sglang-kt's KT EP wrapper sizes its GPU experts from --kt-num-gpu-experts)",
                 _not_taken(*passed) if passed else
                 "set kt.num_gpu_experts (0 = every routed expert on the CPU), e.g. --set kt.num_gpu_experts=0, "
                 "and check with --dry-run that --kt-num-gpu-experts is in the command")


def _cpuinfer(values, stage, line) -> Finding:
    passed = values.passed("kt.cpuinfer")
    return error("KT-E541", "KTMoEWrapper got no CPU thread count (kt_cpuinfer / cpuinfer_threads is None)",
                 _not_taken(*passed) if passed else
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


# An exception line: optional `[time TP0] ` log prefix, a dotted name ending in Error/Exception, a colon.
_EXC = r"^\s*+(?:\[[^\]\n]*+\]\s*+)?+(?>[\w.]*?(?:Error|Exception)\b):"
_CPUINFER = r"\b(?:kt_cpuinfer|cpuinfer_threads|cpuinfer)\b"
_NONE = r"\bNone(?:Type)?\b"

SIGNATURES: tuple[Signature, ...] = (
    Signature("empty", rx(r"empty\(\) received an invalid combination of arguments"), _empty, ANY_STAGE),
    # "TypeError: KTMoEWrapper() argument 'cpuinfer_threads' must be int, not None" (either order) ...
    Signature("cpuinfer", rx(_EXC + rf"(?>[^\n]*?{_CPUINFER})(?>[^\n]*?{_NONE})"
                             rf"|{_EXC}(?>[^\n]*?{_NONE})(?>[^\n]*?{_CPUINFER})", 0), _cpuinfer, ANY_STAGE),
    # ... and kt-kernel 0.7.2's own: `cpuinfer_threads // threadpool_count` in _get_cpu_infer, then the TypeError
    Signature("cpuinfer", rx(r"unsupported operand type\(s\) for (?://|%): 'NoneType' and 'int'"), _cpuinfer,
              ANY_STAGE, after=rx(r"cpuinfer_threads (?://|%) threadpool_count")),
    Signature("header", rx(r"header too large|HeaderTooLarge", re.I), _header, ANY_STAGE),
    Signature("device", rx(r"Expected all tensors to be on the same device"), _device, ANY_STAGE),
    Signature("oom", rx(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"), _oom,
              frozenset({"weights"})),  # the same weights on the same GPUs do not fit the next time either
    Signature("sigill", rx(r"Illegal instruction"), _sigill, ANY_STAGE),
    Signature("numa", rx(r"^(?>[^\n]*?(?:\b(?:numa_run_on_node|numa_bind|set_mempolicy|mbind|libnuma)\b|numa_alloc))"
                         r"(?>[^\n]*?(?:fail|error|denied|not permitted|invalid))"
                         r"|^(?>[^\n]*?\b(?:fail|error))(?>[^\n]*?\bbind(?:ing)?\b)(?>[^\n]*?\bnuma)", re.I), _numa,
              ANY_STAGE),
    Signature("port", rx(r"Address already in use|\[Errno 98\]"), _port),  # another server may go away
)

# Stage markers of an SGLang start-up: the last one seen before a CUDA OOM says what was being allocated.
STAGES: tuple[tuple[Rx, str], ...] = (
    (rx(r"Load weight begin|Loading safetensors|checkpoint shards", re.I), "weights"),
    (rx(r"Load weight end|Memory pool|init memory pool|KV Cache is|max_total_num_tokens", re.I), "kv"),
    (rx(r"Capture cuda graph|Capturing batches", re.I), "graph"),
    (rx(r"Capture cuda graph end|Uvicorn running|server is fired up", re.I), "serving"),
)
# Every pattern whose lines the supervisor keeps before ready (the context lines of a signature included).
KEEP: tuple[Rx, ...] = tuple([s.pattern for s in SIGNATURES] + [s.after for s in SIGNATURES if s.after]
                             + [p for p, _ in STAGES])
_LOOKBACK = 8  # lines between a signature's `after` line and its error line (a traceback's frame and source)


def stage_of(line: str, current: str, low: str | None = None) -> str:
    for pattern, stage in reversed(STAGES):  # "Capture cuda graph end" before "Capture cuda graph"
        if pattern.search(line, low):
            return stage
    return current


def diagnose(lines: Iterable[str], launched: Launched | Mapping[str, Any] | None = None,
             died_by: int | None = None) -> Diagnosis:
    """What it means that a server died after printing `lines` (in order), killed by `died_by` if a signal."""
    plan = launched if isinstance(launched, Launched) else Launched(launched or {})
    stage, seen, out = "start", set(), []
    deterministic, because = False, ""
    recent: collections.deque[str] = collections.deque(maxlen=_LOOKBACK)
    for line in lines:
        w = window(line)
        low = w.lower()
        stage = stage_of(w, stage, low)
        for sig in SIGNATURES:
            if sig.key in seen or not sig.pattern.search(w, low):
                continue
            if sig.after is not None and not any(sig.after.search(r) for r in recent):
                continue
            seen.add(sig.key)
            found = sig.explain(plan, stage, w)
            out.append(found)
            if stage in sig.deterministic and not deterministic:
                deterministic, because = True, found.code
        recent.append(w)
    if died_by == signal.SIGILL and "sigill" not in seen:
        out.append(_sigill(plan, stage, ""))
        deterministic, because = True, out[-1].code
    return Diagnosis(out, deterministic, because)


def explain(lines: Iterable[str], values: Mapping[str, Any] | None = None, died_by: int | None = None,
            argv: Sequence[str] = ()) -> list[Finding]:
    """The findings for a server that died after printing `lines` (in order), killed by `died_by` if a signal."""
    return diagnose(lines, Launched(values or {}, argv), died_by).findings
