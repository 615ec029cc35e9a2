"""`kt-launch bench`'s rules (pure): the figures of one input length from its replies, and the published row of the
same model and hardware class (core/bench.py PUBLISHED)."""

from __future__ import annotations

import statistics

from kt_launch.core.bench import PUBLISHED, Published
from kt_launch.core.smoke import Reply
from kt_launch.resolve.smoke import judge


def published_for(model: str | None, gpu_names: list[str]) -> Published | None:
    """The published figures for this model family on this many GPUs of the same class, or None."""
    if not model or not gpu_names:
        return None
    name = model.lower()
    for p in PUBLISHED:
        if (any(k in name for k in p.model_keys) and len(gpu_names) == p.gpu_count
                and all(p.gpu_key in g for g in gpu_names)):
            return p
    return None


def row_of(length: int, replies: list[Reply], wall_s: float, published: Published | None) -> dict:
    """One input length: per-request medians (TTFT, prefill tok/s = prompt tokens / TTFT, decode tok/s), the
    total decode rate over the concurrent requests, and the published figures beside."""
    ok = [r for r in replies if judge(r) is None and r.ttft_s]
    problems = sorted({p for p in (judge(r) for r in replies) if p})
    ttft = [r.ttft_s for r in ok]
    prefill = [r.prompt_tokens / r.ttft_s for r in ok if r.prompt_tokens]
    decode = [r.decode_tok_s for r in ok if r.decode_tok_s]
    generated = sum(r.completion_tokens or 0 for r in ok)
    pub = next(((p, d) for n, p, d in published.figures if n == length), (None, None)) if published else (None, None)
    return {"input_tokens": length, "requests": len(replies), "ok": len(ok) == len(replies) and bool(replies),
            "prompt_tokens": int(statistics.median([r.prompt_tokens for r in ok if r.prompt_tokens])) if any(
                r.prompt_tokens for r in ok) else None,
            "ttft_s": _r(statistics.median(ttft)) if ttft else None,
            "prefill_tok_s": _r(statistics.median(prefill)) if prefill else None,
            "decode_tok_s": _r(statistics.median(decode)) if decode else None,
            "total_decode_tok_s": _r(generated / wall_s) if ok and wall_s > 0 and len(replies) > 1 else None,
            "published_prefill_tok_s": pub[0], "published_decode_tok_s": pub[1],
            "problems": problems}


def _r(v: float) -> float:
    return round(v, 3)
