"""`kt-launch bench`'s data (no I/O): the published figures it shows beside a measurement, declared once.

PUBLISHED: prefill / decode tok/s at 2k, 8k and 32k input tokens, one request at a time, from KTransformers'
tutorials (shared/reference/field-2026-12.md §3: N5, N7, N8). A row is shown beside a bench of the same model
family (`model_keys`: substrings of the model's name or path, lower-cased) on the same hardware class (GPUs whose
name contains `gpu_key`, `gpu_count` of them). None: the tutorial gives no figure."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LENGTHS = (2048, 8192, 32768)  # the tutorials' table: 2k, 8k, 32k input tokens


@dataclass(frozen=True)
class Published:
    model: str  # as the tutorial names it
    model_keys: tuple[str, ...]
    gpu_key: str
    gpu_count: int
    hardware: str  # as the tutorial names the machine
    figures: tuple[tuple[int, float | None, float | None], ...]  # (input tokens, prefill tok/s, decode tok/s)
    source: str


_QCN = "doc/en/kt-kernel/Qwen3-Coder-Next-Tutorial.md"
_MM = "doc/en/kt-kernel/MiniMax-M2.1-Tutorial.md"
_K2 = "doc/en/kt-kernel/Kimi-K2-Thinking-Native.md"


def _fig(*rows: tuple[float | None, float | None]) -> tuple[tuple[int, float | None, float | None], ...]:
    return tuple((n, p, d) for n, (p, d) in zip(DEFAULT_LENGTHS, rows))


PUBLISHED: tuple[Published, ...] = (
    Published("Qwen3-Coder-Next FP8", ("qwen3-coder-next",), "5090", 1, "1x RTX 5090 32 GB, 2x EPYC 9355",
              _fig((1746, 75.6), (2407, 69.1), (6233, 51.7)), _QCN),
    Published("MiniMax-M2.1 FP8", ("minimax-m2.1", "minimax-m2"), "4090", 1, "1x RTX 4090 48 GB, 2x Xeon 8488C",
              _fig((129, 21.8), (669, 20.9), (1385, 18.5)), _MM),
    Published("MiniMax-M2.1 FP8", ("minimax-m2.1", "minimax-m2"), "4090", 2, "2x RTX 4090 48 GB",
              _fig((139, 23.6), (1013, 23.3), (2269, 21.6)), _MM),
    Published("MiniMax-M2.1 FP8", ("minimax-m2.1", "minimax-m2"), "5090", 1, "1x RTX 5090, 2x EPYC 9355",
              _fig((408, 32.1), (1196, 31.4), (2540, 27.6)), _MM),
    Published("MiniMax-M2.1 FP8", ("minimax-m2.1", "minimax-m2"), "5090", 2, "2x RTX 5090",
              _fig((414, 35.9), (1847, 35.5), (4007, 33.1)), _MM),
    Published("Kimi-K2-Thinking native RAWINT4", ("kimi-k2-thinking",), "4090", 1, "1x RTX 4090 48 GB",
              _fig((53, None), (184, None), (290, None)), _K2),  # 32k measured at 30k (32k OOMs)
    Published("Kimi-K2-Thinking native RAWINT4", ("kimi-k2-thinking",), "4090", 2, "2x RTX 4090 48 GB",
              _fig((85, None), (294, None), (529, None)), _K2),
    Published("Kimi-K2-Thinking native RAWINT4", ("kimi-k2-thinking",), "4090", 4, "4x RTX 4090 48 GB",
              _fig((118, None), (415, None), (818, None)), _K2),
    Published("Kimi-K2-Thinking native RAWINT4", ("kimi-k2-thinking",), "4090", 8, "8x RTX 4090 48 GB",
              _fig((130, None), (435, None), (1055, None)), _K2),
)
