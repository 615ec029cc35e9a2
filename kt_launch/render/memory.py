"""Memory tables: the plan's per-GPU and RAM budget (dry-run), and `kt-launch fit`'s rows. Pure text."""

from __future__ import annotations

from kt_launch.core.memory import MOE_LORA_FIT, FitStatus, MemoryPlan

GiB = 1 << 30


def _g(n: int) -> str:
    return f"{n / GiB:.1f}"


def memory_text(m: MemoryPlan | None) -> str:
    """The dry-run's memory section (GiB). Empty when no plan was made."""
    if m is None:
        return ""
    fraction = (f", mem_fraction_static {round(m.mem_fraction_static, 4)} from {m.mem_fraction_source}" if m.gpus else "")
    lines = [f"memory (GiB; TP {m.tp_size}, {m.num_gpu_experts} GPU experts per MoE layer = {m.gpu_experts_total} "
             f"in all{fraction}, chunked_prefill_size {m.chunked_prefill_size}):"]
    if m.gpus:
        head = ("gpu", "name", "total", "reserve", "weights", "experts", "KV B/token", "KV tokens", "KV", "free")
        rows = [head] + [(str(g.index), g.name[:24], _g(g.total_bytes), _g(g.reserve_bytes), _g(g.weights_bytes),
                          _g(g.gpu_experts_bytes), str(g.kv_bytes_per_token), str(g.kv_tokens),
                          _g(g.kv_tokens * g.kv_bytes_per_token), _g(g.free_bytes)) for g in m.gpus]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            lines.append("  " + "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for g in m.gpus:
        if g.used_bytes:
            lines.append(f"  gpu {g.index}: {_g(g.used_bytes)} GiB held by other processes (in reserve; nvidia-smi memory.used)")
    if m.fit is not None:
        lines.append("  " + fit_line(m))
    r = m.ram
    if r is not None:
        total = f" of {_g(r.total_bytes)}" if r.total_bytes else ""
        lines.append(f"  RAM: need {_g(r.need_bytes)}{total}: routed experts {_g(r.experts_bytes)} ({r.experts_source}) "
                     f"+ kt-kernel buffers {_g(r.other_bytes)}")
        for n in r.nodes:
            lines.append(f"    NUMA node {n.node}: {_g(n.need_bytes)}" + (f" of {_g(n.total_bytes)}" if n.total_bytes is not None else ""))
    for note in m.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"


def fit_line(m: MemoryPlan) -> str:
    """The plan's fit in words: a count, MoE-LoRA's 0, or that the KV target does not fit (never -1)."""
    f = m.fit
    if f.status is FitStatus.NO_ROOM:
        return (f"fit: {f.kv_tokens} KV tokens do not fit on {f.limited_by} even without GPU experts "
                "(see KT-E601 / KT-E613)")
    if f.status is FitStatus.MOE_LORA:
        return f"fit: 0: {MOE_LORA_FIT} ({f.kv_tokens} KV tokens fit)"
    return (f"fit: at most {f.max_gpu_experts} GPU experts per layer with {f.kv_tokens} KV tokens "
            f"(limited by {f.limited_by}; {_g(f.per_layer_bytes)} GiB per expert per layer)")


def fit_text(rows: list[dict], ram: dict | None, source: str) -> str:
    """`kt-launch fit`: one row per TP size and KV target, each with a ready --set line."""
    out = [f"# kt-launch fit ({source})", ""]
    if not rows:
        out.append("no GPU rows: no GPUs known (give --host-facts FILE) or no checkpoint headers")
    head = ("tp", "kv tokens", "gpu experts/layer", "limited by", "set")
    table = [head] + [(str(r["tp_size"]), str(r["kv_tokens"]),
                       "-" if r["max_gpu_experts"] is None else str(r["max_gpu_experts"]), r["limited_by"], r["set"])
                      for r in rows]
    if any(r["status"] == FitStatus.MOE_LORA.value for r in rows):
        out.append(f"gpu experts/layer 0: {MOE_LORA_FIT}")
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for t in table if rows else ():  # no header over no rows
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
    if ram is not None:
        out.append("")
        out.append(f"RAM: kt-kernel needs {_g(ram['need_bytes'])} GiB (experts {_g(ram['experts_bytes'])} GiB, "
                   f"{ram['experts_source']}; buffers {_g(ram['other_bytes'])} GiB), host has {_g(ram['total_bytes'])} GiB")
    return "\n".join(out) + "\n"
