"""kt-kernel methods: the rules that read THE method table (core/methods.py): effective_method(), cpu_format(),
which CPU variant implements a method, and the kernel-shape gate (which hidden / moe_intermediate sizes a method
can build on a variant with a number of thread pools). The table's docstring cites kt-kernel's source for each
rule; tests/core/test_kernel_shapes.py holds the gate to what the real kt-kernel did on an AMX Xeon."""

from __future__ import annotations

from dataclasses import dataclass

from kt_launch.core.methods import (CONVERTED, GGUF, HF, INFERENCE_METHODS, METHODS, MOE_LORA_SFT_METHODS,  # noqa: F401
                                    SFT_METHODS, Method)

# Views of the table, for the places that ask one question of it.
NEVER_AVAILABLE = tuple(m.name for m in METHODS.values() if not m.sft and not m.available)
READS_HF_CHECKPOINT = tuple(m.name for m in METHODS.values() if not m.sft and m.available and m.reads == HF)
NEEDS_CONVERTED = tuple(m.name for m in METHODS.values() if not m.sft and m.available and m.reads == CONVERTED)
SFT_FROM_KT_METHOD = {k: m.name for m in METHODS.values() for k in m.sft_for}
KT_METHOD_FOR_SFT = {m.name: m.base for m in METHODS.values() if m.moe_lora}
SFT_BASE_WEIGHTS = {m.name: m.sft_base_weights for m in METHODS.values() if m.moe_lora}


def row(method: str) -> Method | None:
    """The table's row for a method name (exact, as kt-kernel validates it), or None."""
    return METHODS.get(method)


def is_sft(method: str) -> bool:
    r = METHODS.get(method)
    return r is not None and r.sft


def implements(variant: str, method: str) -> bool:
    """Whether kt-kernel's `variant` extension has the method's class. Unknown names: not judged here (True)."""
    r = METHODS.get(method)
    return r is None or variant in r.variants


def gpu_experts_in_ram(variant: str, method: str | None = None) -> bool:
    """kt-kernel's AMX / AVX-512 builds load every expert, GPU-placed ones too (kvcache-ai/ktransformers#2084);
    the avx2 build skips the masked ones at load. Unknown variant or method: counted."""
    r = METHODS.get(method or "") or METHODS["BF16"]
    return variant not in r.gpu_experts_skipped_on


def ram_from_headers(variant: str, method: str) -> bool:
    """Whether the weight files' headers give the RAM kt-kernel holds (False where the variant repacks them)."""
    r = METHODS.get(method)
    return r is None or variant not in r.repacked_on


def effective_method(get) -> str:
    """The method kt-kernel runs, from resolved values (`get(key)` -> value): moe_lora.sft_method in MoE-LoRA mode
    (the plan holds it only then), else kt.method, else SGLang's default AMXINT4. The one place this rule lives."""
    return get("moe_lora.sft_method") or get("kt.method") or "AMXINT4"


def cpu_format(get) -> str:
    """The format kt-kernel keeps the CPU experts in: the effective method, or in MoE-LoRA mode the inference
    method behind the SFT method (AMXBF16_SFT keeps BF16 experts). What the RAM plan counts and convert writes."""
    m = effective_method(get)
    return KT_METHOD_FOR_SFT.get(m, m)


# -- the kernel-shape gate ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapeProblem:
    """One size kt-kernel cannot build: `key` (config.json's name) = `size` must be a multiple of `multiple`
    (the rule's multiple x `pools` where the intermediate is split over the pools)."""

    key: str
    size: int
    multiple: int
    pools: int
    per_pool: bool
    method: str
    variant: str
    source: str
    min_blocks: int = 0  # LLAMAFILE: size // multiple must be at least this (the pool count)

    def text(self) -> str:
        if self.min_blocks:
            return (f"{self.key} {self.size} is too small for {self.method} with {self.pools} thread pools: each pool "
                    f"takes whole blocks of {self.multiple}, so it must be at least {self.multiple * self.pools}")
        split = (f" ({self.multiple // self.pools} per thread pool x {self.pools} pools: kt-kernel splits it over the "
                 "pools)" if self.per_pool and self.pools > 1 else "")
        where = f" on kt-kernel's {self.variant} variant" if self.variant != "any" else ""
        return f"{self.key} {self.size} must be a multiple of {self.multiple}{split} for {self.method}{where}"


def shape_problems(method: str, variant: str | None, hidden: int, intermediate: int, pools: int) -> list[ShapeProblem]:
    """The sizes `method` cannot build on `variant` with `pools` thread pools (kt.threadpool_count), from the
    table's shape rules plus kt-kernel's even split of the intermediate over the pools (operators/moe-tp.hpp:67-71,
    120-130). Empty when it can (or the method is unknown or not on `variant`: other rules name that).
    variant None (the CPU is not known): the rules that hold on every variant implementing the method."""
    r = METHODS.get(method)
    if r is None or not r.variants or (variant is not None and variant not in r.variants):
        return []
    pools = max(1, int(pools or 1))
    sizes = {"hidden_size": hidden, "moe_intermediate_size": intermediate}
    out: list[ShapeProblem] = []
    for rule in r.shape_rules:
        if variant not in rule.variants if variant is not None else not set(r.variants) <= set(rule.variants):
            continue
        size = sizes[rule.dim]
        if rule.min_blocks_per_pool:
            if size % rule.multiple:
                out.append(ShapeProblem(rule.dim, size, rule.multiple, pools, False, method, variant or "any",
                                        rule.source))
            elif size // rule.multiple < pools:
                out.append(ShapeProblem(rule.dim, size, rule.multiple, pools, False, method, variant or "any",
                                        rule.source, min_blocks=pools))
            continue
        need = rule.multiple * (pools if rule.per_pool else 1)
        if size % need:
            out.append(ShapeProblem(rule.dim, size, need, pools, rule.per_pool, method, variant or "any", rule.source))
    if not any(p.key == "moe_intermediate_size" for p in out) and not any(x.min_blocks_per_pool for x in r.shape_rules) \
            and intermediate % pools:
        out.append(ShapeProblem("moe_intermediate_size", intermediate, pools, pools, False, method, variant or "any",
                                "operators/moe-tp.hpp:67-71 (the intermediate is split evenly over the pools)"))
    return out


def methods_for_shape(variant: str | None, hidden: int, intermediate: int, pools: int,
                      candidates: tuple[str, ...] = ("AMXINT8", "AMXINT4", "BF16", "FP8")) -> list[str]:
    """Of `candidates`, the inference methods `variant` implements that can build this shape."""
    return [m for m in candidates if (variant is None or implements(variant, m)) and METHODS[m].available
            and not shape_problems(m, variant, hidden, intermediate, pools)]
