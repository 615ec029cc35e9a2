"""THE kt-kernel method table: one row per method kt-kernel 0.7.2 accepts (inference and SFT), and what each does.

Data only, in core so that the option registry (moe_lora.sft_method's choices) can read it; the rules that
use it (effective method, the kernel-shape gate) are in resolve/methods.py. Nothing else decides by a
method's name: "is it SFT", "which CPU variant runs it", "what does it read", "what shapes can it build",
"does RAM hold GPU-placed experts" are fields here.

Sources (kt-kernel 0.7.2 wheel; shared/reference/kt-kernel-0.7.2.md):
- names: experts.py:33-72 (inference and SFT vocabularies);
- CPU variants: introspected `kt_kernel_ext.moe` per variant (§3.1): avx2 lacks AMXInt4/AMXInt8/FP8PerChannel;
  SFT classes only in amx and avx512_bf16, except MXFP4_SFT; no variant has SYCLGPTQInt4, Int4/Int8_KERNEL;
  AMXINT4_1_SFT, AMXINT4_1KGroup_SFT and the KGroup/_1 SkipLoRA names raise "Unknown SFT method" (sft/amx.py:226-231);
- what each reads: utils/loader.py and amx.py load_weights (§3.3), sft/amx.py:751-860 (§4);
- GPU-placed experts: the AMX/AVX-512 builds load every expert (kvcache-ai/ktransformers#2084), the avx2 build skips
  the masked ones (operators/avx2/*-moe.hpp);
- shapes: kt-kernel's C++ (kvcache-ai/ktransformers, kt-kernel/, commit 95009ea6), confirmed on an AMX Xeon with the
  real kt-kernel 0.7.2 for every variant (tests/data/kernel_shapes_xeon16_kt072.json, bench/kernel_shapes_sweep.py):
  * operators/moe-tp.hpp:67-71 and 120-130: the intermediate is split evenly over the thread pools (one TP part per
    pool / NUMA partition): moe_intermediate_size % threadpool_count == 0, each part intermediate/pools wide;
  * operators/amx/la/amx_kernels.hpp:960-976 GemmKernel224Int8 (AMXINT8): N_STEP 32, K_STEP 64; amx_buffers.hpp:31-36
    BufferAImpl needs k % K_STEP ("max_m and k must be multiple of M_STEP and K_STEP"): gate/up have k = hidden,
    down has k = intermediate/pools, so hidden % 64 and (intermediate/pools) % 64;
  * amx_kernels.hpp:1559-1576 GemmKernel224Int4 (AMXINT4): K_STEP 64; amx_buffers.hpp:505-523 BufferBInt4Impl has
    B_K_STEP = 2 * K_STEP = 128 ("n or k is not aligned to N_STEP or B_K_STEP"): hidden % 128, (intermediate/pools) % 128;
  * amx_kernels.hpp:567-581 GemmKernel224BF (BF16 on the amx and avx512_bf16 builds, operators/amx/bf16-moe.hpp):
    N_STEP 32, K_STEP 32: hidden % 32, (intermediate/pools) % 32. Measured: intermediate 32/96/160 in 2 pools
    (16/48/80 per pool) kills the process with SIGSEGV at the first forward; the avx2 BF16 kernel takes every size;
  * operators/moe-tp.hpp:83-96 (LLAMAFILE): intermediate % 256 (QK_K) and intermediate/256 >= threadpool_count.
  The avx512 variants (avx512_bf16/vbmi/vnni/base) run the same AMXINT8/AMXINT4 alignment as amx (measured).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ALL_VARIANTS = ("amx", "avx512_bf16", "avx512_vbmi", "avx512_vnni", "avx512_base", "avx2")
AVX512_UP = ALL_VARIANTS[:-1]
SFT_VARIANTS = ("amx", "avx512_bf16")

# What a method reads as its expert weights.
HF = "hf"  # the original HF checkpoint (kt.weight_path defaults to model.path)
CONVERTED = "converted"  # kt-kernel converted AMX weights (blk.*.numa.* safetensors or _layer_*/_numa_*/*.kt)
GGUF = "gguf"  # a .gguf file or a dir of them


@dataclass(frozen=True)
class ShapeRule:
    """`dim` (a config.json key) must be a multiple of `multiple` (of `multiple` x pools where `per_pool`: kt-kernel
    splits the intermediate over the thread pools), on the CPU variants listed; `min_blocks_per_pool` > 0 also asks
    dim / multiple >= pools (LLAMAFILE's blocks). `source` cites kt-kernel; `measured` says the device grid confirms it."""

    dim: str
    multiple: int
    per_pool: bool
    variants: tuple[str, ...]
    source: str
    measured: bool = False
    min_blocks_per_pool: bool = False


def _amx_rules(k: int, measured: bool = True, variants: tuple[str, ...] = AVX512_UP, src: str = "") -> tuple:
    return (ShapeRule("hidden_size", k, False, variants, src, measured),
            ShapeRule("moe_intermediate_size", k, True, variants, src, measured))


INT8_RULES = _amx_rules(64, src="amx_kernels.hpp:960-976 GemmKernel224Int8 K_STEP 64; amx_buffers.hpp:31-36")
INT4_RULES = _amx_rules(128, src="amx_kernels.hpp:1559-1576 GemmKernel224Int4; amx_buffers.hpp:505-523 B_K_STEP 128")
BF16_RULES = _amx_rules(32, variants=SFT_VARIANTS, src="amx_kernels.hpp:567-581 GemmKernel224BF N_STEP/K_STEP 32")
LLAMAFILE_RULES = (ShapeRule("moe_intermediate_size", 256, False, ALL_VARIANTS, "operators/moe-tp.hpp:83-96 QK_K 256",
                             min_blocks_per_pool=True),)


@dataclass(frozen=True)
class Method:
    """One kt-kernel method. `base`: for an SFT method, the inference-side format its experts are kept in
    (what the RAM plan counts and convert writes); `variants`: the CPU variants whose extension implements it;
    `reads`: HF / CONVERTED / GGUF; `sft_base_weights`: for SFT methods sglang-kt serves, the key its base
    weights come from; `moe_lora`: sglang-kt's MoE-LoRA mode accepts it as moe_lora.sft_method; `sft_for`: the
    kt.method values sglang-kt maps to this SFT method (kt_ep_wrapper.py:207-232); `gpu_experts_skipped_on`: the
    variants that do not load GPU-placed experts into RAM; `repacked_on`: variants that keep the weights in RAM in
    another layout than the file (the file headers do not give the RAM figure); `convert_from`: the checkpoint
    formats `kt-kernel convert` turns into this method's files (empty: nothing to convert); `skip_lora`: an SFT
    class that runs the base experts without the LoRA (the `_SkipLoRA` classes), so it takes lora_rank 0."""

    name: str
    sft: bool = False
    base: str | None = None
    variants: tuple[str, ...] = ALL_VARIANTS
    reads: str = HF
    shape_rules: tuple[ShapeRule, ...] = ()
    sft_base_weights: str | None = None
    moe_lora: bool = False
    sft_for: tuple[str, ...] = ()
    gpu_experts_skipped_on: tuple[str, ...] = ("avx2",)
    repacked_on: tuple[str, ...] = ()
    convert_from: tuple[str, ...] = ()
    skip_lora: bool = False

    @property
    def available(self) -> bool:
        return bool(self.variants)


def _sft(name: str, base: str, variants=SFT_VARIANTS, reads=CONVERTED, rules=(), **kw) -> Method:
    """An SFT row; its shape rules are its base kernel's, not measured for the SFT classes themselves."""
    rules = tuple(replace(r, measured=False) for r in rules)
    return Method(name, sft=True, base=base, variants=variants, reads=reads, shape_rules=rules, **kw)


_ROWS = (
    # inference (experts.py:33-50)
    Method("AMXINT4", variants=AVX512_UP, reads=CONVERTED, shape_rules=INT4_RULES, convert_from=("BF16", "FP8")),
    Method("AMXINT8", variants=AVX512_UP, reads=CONVERTED, shape_rules=INT8_RULES, convert_from=("BF16", "FP8")),
    Method("BF16", shape_rules=BF16_RULES),
    Method("FP8"),
    Method("FP8_PERCHANNEL", variants=AVX512_UP),
    Method("GPTQ_INT4"),
    Method("SYCL_GPTQ_INT4", variants=()),
    Method("LLAMAFILE", reads=GGUF, shape_rules=LLAMAFILE_RULES),
    Method("MOE_INT4", variants=(), reads=CONVERTED),
    Method("MOE_INT8", variants=(), reads=CONVERTED),
    # MXFP4 reads the checkpoint (E2M1 + one ue8m0 byte per 32): kt-kernel 0.7.2's AMX / AVX-512 class keeps that
    # layout in RAM (0.532 B/param measured, bench/mxfp4_resident_bytes.py); the avx2 class AVX2MXFP4_MOE keeps FP32
    # group scales (operators/avx2/mxfp4-moe.hpp:121 `float* d`; 0.626 B/param measured), so there the headers
    # do not give the RAM figure.
    Method("MXFP4", repacked_on=("avx2",)),
    Method("MXFP8"),
    Method("NVFP4"),
    # RAWINT4 reads the compressed-tensors checkpoint; its AMX / AVX-512 kernel keeps FP32 group scales in RAM,
    # the avx2 kernel (operators/avx2/rawint4-moe.hpp) the checkpoint's BF16 ones.
    Method("RAWINT4", repacked_on=AVX512_UP),
    # SFT (experts.py:52-72; implemented ones: sft/amx.py:68-80)
    _sft("AMXBF16_SFT", "AMXBF16", reads=HF, rules=BF16_RULES, sft_base_weights="model.path", moe_lora=True,
         sft_for=("AMXBF16", "BF16")),
    _sft("AMXINT8_SFT", "AMXINT8", rules=INT8_RULES, sft_base_weights="kt.weight_path", moe_lora=True,
         sft_for=("AMXINT8",)),
    _sft("AMXINT4_SFT", "AMXINT4", rules=INT4_RULES, sft_base_weights="kt.weight_path", moe_lora=True,
         sft_for=("AMXINT4",)),
    _sft("INT8_SFT", "AMXINT8", rules=INT8_RULES),
    _sft("AMXFP8_SFT", "FP8", reads=HF),
    _sft("MXFP4_SFT", "MXFP4", variants=ALL_VARIANTS, reads=HF),
    _sft("RAWINT4_SFT", "RAWINT4", reads=HF),
    _sft("AMXINT4_KGroup_SFT", "AMXINT4"),
    _sft("AMXINT4_1_SFT", "AMXINT4", variants=()),
    _sft("AMXINT4_1KGroup_SFT", "AMXINT4", variants=()),
    _sft("AMXBF16_SFT_SkipLoRA", "AMXBF16", reads=HF, rules=BF16_RULES, skip_lora=True),
    _sft("AMXINT8_SFT_SkipLoRA", "AMXINT8", rules=INT8_RULES, skip_lora=True),
    _sft("AMXINT4_SFT_SkipLoRA", "AMXINT4", rules=INT4_RULES, skip_lora=True),
    _sft("AMXINT4_KGroup_SFT_SkipLoRA", "AMXINT4", variants=(), skip_lora=True),
    _sft("AMXINT4_1_SFT_SkipLoRA", "AMXINT4", variants=(), skip_lora=True),
    _sft("AMXINT4_1KGroup_SFT_SkipLoRA", "AMXINT4", variants=(), skip_lora=True),
)
METHODS: dict[str, Method] = {m.name: m for m in _ROWS}

INFERENCE_METHODS = tuple(m.name for m in _ROWS if not m.sft)
SFT_METHODS = tuple(m.name for m in _ROWS if m.sft)
# What sglang-kt's MoE-LoRA mode takes as moe_lora.sft_method.
MOE_LORA_SFT_METHODS = tuple(m.name for m in _ROWS if m.moe_lora)
