"""kt-kernel 0.7.2 method vocabulary (experts.py:32-72) and what each method reads as base weights."""

INFERENCE_METHODS = (
    "AMXINT4", "AMXINT8", "BF16", "FP8", "FP8_PERCHANNEL", "GPTQ_INT4", "SYCL_GPTQ_INT4", "LLAMAFILE",
    "MOE_INT4", "MOE_INT8", "MXFP4", "MXFP8", "NVFP4", "RAWINT4",
)
# Pass validation but no CPU variant of the 0.7.2 wheel implements them.
NEVER_AVAILABLE = ("SYCL_GPTQ_INT4", "MOE_INT4", "MOE_INT8")
# Methods that read the original HF checkpoint: kt.weight_path defaults to model.path.
READS_HF_CHECKPOINT = ("BF16", "FP8", "FP8_PERCHANNEL", "GPTQ_INT4", "MXFP4", "MXFP8", "NVFP4", "RAWINT4")
# Methods that need converted expert weights (blk.*.numa.* safetensors or _layer_*/_numa_*/*.kt).
NEEDS_CONVERTED = ("AMXINT4", "AMXINT8")

# sglang-kt's _map_kt_method_to_sft_method (KT kt_ep_wrapper.py:207-232), restricted to our SFT methods.
SFT_FROM_KT_METHOD = {
    "AMXBF16": "AMXBF16_SFT", "BF16": "AMXBF16_SFT",
    "AMXINT8": "AMXINT8_SFT", "AMXINT4": "AMXINT4_SFT",
}
KT_METHOD_FOR_SFT = {"AMXBF16_SFT": "AMXBF16", "AMXINT8_SFT": "AMXINT8", "AMXINT4_SFT": "AMXINT4"}

# Where the SFT wrapper reads base expert weights (seed log bug 3; KK sft/amx.py:751-860).
SFT_BASE_WEIGHTS = {"AMXBF16_SFT": "model.path", "AMXINT8_SFT": "kt.weight_path", "AMXINT4_SFT": "kt.weight_path"}


def effective_method(get) -> str:
    """The method kt-kernel runs, from resolved values (`get(key)` -> value): moe_lora.sft_method in MoE-LoRA mode
    (the plan holds it only then), else kt.method, else SGLang's default AMXINT4. The one place this rule lives."""
    return get("moe_lora.sft_method") or get("kt.method") or "AMXINT4"


def cpu_format(get) -> str:
    """The format kt-kernel keeps the CPU experts in: the effective method, or in MoE-LoRA mode the inference
    method behind the SFT method (AMXBF16_SFT keeps BF16 experts). What the RAM plan counts and convert writes."""
    m = effective_method(get)
    return KT_METHOD_FOR_SFT.get(m, m)
