"""The memory plan's findings and `kt-launch fit`'s rows, built on resolve/memory.py's arithmetic. Pure.

`plan_checks` is what resolve/experts.py `_memory_checks` adds to a plan: FP8 block TP divisibility (KT-E610), the
lazily built layerwise-prefill layer (KT-W611), a thin activation reserve (KT-W612), a KV target that does not
fit even without GPU experts (KT-E613) and GPU memory other processes hold (KT-W615). `fit_rows` returns
`FitRows`: the rows plus typed `findings` (KT-I614, KT-E613) for the fit command to carry.
"""

from __future__ import annotations

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.memory import FitStatus
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.memory import (FIT_TARGETS, GiB, MIN_KV_TOKENS, MiB, Setup, fit, fitted_kv_tokens,
                                      fp8_block_problem, layerwise_bytes, mem_fraction_of, plan, setup_from,
                                      sglang_gpu_defaults, sglang_reserved_mib, tp_sizes, used_of)


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def plan_checks(s: Setup, values: dict[str, Resolved]) -> list[Finding]:
    """FP8 TP divisibility (needs only config.json), then, where the GPUs are sized: a KV target that does not fit
    even without GPU experts, a thin activation reserve and the lazily built layerwise-prefill layer."""
    out: list[Finding] = []
    why = fp8_block_problem(s.model, s.tp)
    if why is not None:
        ok = [t for t in (1, 2, 4, 8, 16) if fp8_block_problem(s.model, t) is None]
        out.append(error("KT-E610", f"server.tp_size={s.tp} cannot load this checkpoint: {why}",
                         f"use server.tp_size in {ok}" if ok else "use a checkpoint without FP8 block scales"))
    mtt = values.get("server.max_total_tokens")
    reserved = s.cpu_method.upper() == "MXFP4"  # model_runner.py:593-607 accounts for its layer before KV sizing
    if s.layerwise and not reserved and not s.max_total_tokens and (mtt is None or not mtt.value):
        sized = f" ({_gib(layerwise_bytes(s))} per GPU)" if s.weights is not None else ""
        out.append(warning("KT-W611", f"kt.gpu_prefill_token_threshold is set: sglang-kt builds a full MoE layer"
                           f"{sized} on the first prompt over it (kt_ep_wrapper.py:5749-5756, 6178-6309), after "
                           "SGLang sized its KV pool, which takes that room when server.max_total_tokens is unset "
                           "(only MXFP4 reserves it, model_runner.py:593-607): the first long prompt runs out of "
                           "memory", "set server.max_total_tokens (the memory table's KV tokens), or leave "
                           "kt.num_gpu_experts unset so the plan derives both"))
    if s.speculative and s.speculative.upper() not in ("NONE", "NGRAM"):
        mtp = f"{_gib(s.weights.skipped_bytes)} of this checkpoint's multi-token-prediction / next-n tensors" \
            if s.weights is not None and s.weights.skipped_bytes else "the draft model's weights"
        out.append(warning("KT-W171", f"--speculative-algorithm {s.speculative}: SGLang then loads {mtp} on every GPU "
                           "and keeps a KV pool for the draft, which this plan does not size (its GPU figures are "
                           "without them)", "leave GPU room for the draft: lower kt.num_gpu_experts or "
                           "server.max_total_tokens, or plan without --speculative-algorithm"))
    if not s.gpus or s.weights is None:
        return out
    out += _used_checks(s)
    out += _reserve_checks(s, values)
    f = fit(s)
    floor = fit(s, min(MIN_KV_TOKENS, s.kv_target))
    if not f.fits and floor.fits and s.kv_target_key == "fit.kv_tokens":
        left = fitted_kv_tokens(s, 0)
        out.append(error("KT-E613", f"{s.kv_target_key}={s.kv_target} KV tokens do not fit on {f.limited_by} even "
                         f"without GPU experts: at most {left} fit (TP {s.tp})",
                         f"set {s.kv_target_key} to at most {left}, or raise server.tp_size (now {s.tp})"))
    return out


USED_WARN_BYTES = GiB  # memory.used below this is the driver's and a desktop's own; above it, another process


def _used_checks(s: Setup) -> list[Finding]:
    """KT-W615: other processes hold memory on a GPU of the TP group. SGLang measures the free memory at start-up
    (the minimum over the TP group: model_runner.py:402, 907-932, utils/common.py:508-609) and sizes its static
    pool and KV from it, so the plan subtracts memory.used; the figures hold only while that memory stays taken."""
    busy = [g for g in s.gpus if used_of(g) >= USED_WARN_BYTES]
    if not busy:
        return []
    listed = ", ".join(f"GPU {g.index} ({g.name}) {_gib(used_of(g))} of {_gib(g.memory_bytes)}" for g in busy)
    return [warning("KT-W615", f"other processes use {listed} (nvidia-smi memory.used in the host facts): SGLang "
                    "sizes its static pool and KV cache against the memory free at start-up, so the plan subtracts it; "
                    "if they free it or take more, the fit changes",
                    "stop the other processes on these GPUs (nvidia-smi lists them) and re-plan, or plan with what "
                    "they leave, as here")]


def _reserve_checks(s: Setup, values: dict[str, Resolved]) -> list[Finding]:
    """A user mem_fraction_static that leaves a GPU less room for activations, CUDA graphs and NCCL than SGLang's
    own default keeps on that card (server_args.py:1287-1400: the reserve estimate at the chunk size its default
    picks for the card; a larger user chunk needs more). The room is the (1 - mem_fraction_static) share plus the
    static room KV does not take when --max-total-tokens caps the pool. kvcache-ai/ktransformers#1678 (Qwen3-235B,
    one 24 GB card, 0.92, 1.9 GiB left) ran out of memory; doc/en/Kimi-K2-Thinking-Native.md (0.94, KV capped,
    11.7 GiB left on 48 GB) runs."""
    if s.mem_fraction is None:
        return []
    mf, chunk, graph_bs = mem_fraction_of(s)
    n = values.get("kt.num_gpu_experts")
    r = values.get("kt.gpu_experts_ratio")
    p = plan(s, n.value if n is not None and n.value else 0, r.value if r is not None else None)
    g = min(p.gpus, key=lambda x: (x.total_bytes - x.used_bytes) * (1 - mf) + max(0, x.free_bytes))
    left_mib = ((g.total_bytes - g.used_bytes) * (1 - mf) + max(0, g.free_bytes)) / MiB
    default_chunk = sglang_gpu_defaults(min(x.memory_bytes for x in s.gpus) / MiB, s.tp)[0]
    at = min(chunk, default_chunk) if chunk > 0 else default_chunk
    want_mib = sglang_reserved_mib(s.tp, at, graph_bs)
    if left_mib >= want_mib:
        return []
    more = f"; chunked_prefill_size {chunk} needs {sglang_reserved_mib(s.tp, chunk, graph_bs) / 1024:.1f} GiB" \
        if chunk > at else ""
    return [warning("KT-W612", f"server.mem_fraction_static={mf} leaves {left_mib / 1024:.1f} GiB of GPU {g.index} "
                    f"({g.name}) for activations, CUDA graphs and NCCL, below the {want_mib / 1024:.1f} GiB SGLang's "
                    f"default keeps on this card (its estimate at chunk {at}, TP {s.tp}, server_args.py:1287-1400)"
                    f"{more}: a full prefill chunk runs out of memory",
                    "unset server.mem_fraction_static (SGLang's default keeps the estimate), lower it, set "
                    "server.max_total_tokens below what the plan leaves, or lower server.chunked_prefill_size")]


# -- kt-launch fit ------------------------------------------------------------------------------------------

class FitRows(list):
    """`fit_rows`' answer: the rows (dicts, as before) plus `findings`, typed, for `kt-launch fit` to carry:
    KT-I614 (TP sizes left out), KT-E613 (the user's KV target fits no TP size)."""

    findings: tuple[Finding, ...] = ()


def _row(s: Setup, tp: int, kv: int) -> dict:
    """One row: the fit of `kv` KV tokens on the TP size's set-up (one set-up serves every KV target)."""
    f = fit(s, kv)
    set_line = "-"
    if f.fits:
        experts = "" if f.status is FitStatus.MOE_LORA else f" --set kt.num_gpu_experts={f.max_gpu_experts}"
        set_line = f"--set server.tp_size={tp}{experts} --set server.max_total_tokens={kv}"
    return {"tp_size": tp, "kv_tokens": kv, "max_gpu_experts": f.max_gpu_experts if f.fits else None,
            "limited_by": f.limited_by if f.fits else f"{f.limited_by}: weights + KV do not fit",
            "per_layer_bytes": f.per_layer_bytes, "set": set_line, "status": f.status.value}


def fit_rows(inp: ResolveInput, values: dict[str, Resolved], targets=FIT_TARGETS) -> FitRows:
    """`kt-launch fit`: the largest kt.num_gpu_experts per TP size and KV target, each with a ready --set line.
    A row that does not fit shows no count (None) and no --set line; TP sizes the checkpoint cannot load at are
    left out (KT-I614); the user's own KV target (fit.kv_tokens or server.max_total_tokens) is tabulated too, and
    when no TP size holds it that is KT-E613."""
    cfg = inp.config
    user_kv = cfg.server.max_total_tokens or (cfg.fit.kv_tokens if inp.provenance.of("fit.kv_tokens") else None)
    targets = tuple(sorted(set(targets) | ({user_kv} if user_kv else set())))
    rows, skipped, findings = FitRows(), [], []
    for tp in tp_sizes(len(inp.host.gpus)):
        s = setup_from(inp, values, tp=tp, kv_target=targets[0])
        if s is None or s.weights is None or not s.gpus:
            return rows
        if fp8_block_problem(s.model, tp) is not None:
            skipped.append(tp)
            continue
        for kv in targets:
            rows.append(_row(s, tp, kv))
    if skipped:
        findings.append(info("KT-I614", f"server.tp_size {', '.join(map(str, skipped))} left out: "
                             f"{fp8_block_problem(inp.model, skipped[0])}"))
    if user_kv and rows and not any(r["kv_tokens"] == user_kv and r["max_gpu_experts"] is not None for r in rows):
        key = "server.max_total_tokens" if cfg.server.max_total_tokens else "fit.kv_tokens"
        findings.append(error("KT-E613", f"{key}={user_kv} KV tokens do not fit at any TP size of "
                              f"{inp.host.source} even without GPU experts", f"lower {key}, or use more or bigger GPUs"))
    rows.findings = tuple(findings)
    return rows
