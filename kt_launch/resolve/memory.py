"""The memory plan: what each GPU of the TP group and the host RAM hold, and how many GPU experts fit. Pure.

Every formula follows the sglang-kt 0.7.2 wheel (paths under site-packages/sglang/srt/) or kt-kernel 0.7.2:
- SGLang's static pool is `mem_fraction_static` of the memory free after CUDA/NCCL start-up (other processes'
  memory, host facts `used_bytes`, is not free: `used_of`); the KV pool gets what
  the weights leave of it (model_runner_kv_cache_mixin.py:253-286 `profile_max_num_token`: rest = available -
  total_gpu_memory * (1 - mem_fraction_static)), capped by --max-total-tokens (ibid. :620-628).
- Unset, `mem_fraction_static` comes from `_handle_gpu_memory_settings` (server_args.py:1263-1415), reproduced in
  `default_mem_fraction`; its GPU size is nvidia-smi's smallest memory.total in MiB (utils/common.py:1724-1755).
- KV bytes per token: MLA stores kv_lora_rank + qk_rope_head_dim per layer, the same on every rank
  (mem_cache/memory_pool.py:1414-1418, the pool's allocation); MHA/GQA stores max(1, kv_heads // tp) heads of
  head_dim + v_head_dim (model_runner_kv_cache_mixin.py:176-183, configs/model_config.py:774-781).
- Hybrid models keep per-token KV only where SGLang does: the full-attention layers of Qwen3-Next / Qwen3.5 (their
  Gated-DeltaNet state pool per request beside it, `state_pool`); Llama-4's and gpt-oss's sliding-window layers at
  swa_full_tokens_ratio (0.8) of the full layers' tokens (model_runner_kv_cache_mixin.py:410-470); DeepSeek-V4's
  compressed pool per "full" token (model_executor/memory_profiler.py:64-101, `dsv4_bytes_per_token`).
- GPU experts: --kt-num-gpu-experts is per MoE layer and multiplied by sglang-kt's MoE-layer count;
  --kt-gpu-experts-ratio overrides it with int(layers x experts x ratio) (layers/moe/kt_ep_wrapper.py:4570-4615).
  Each layer's GPU experts are the wrapped (model.path) quant method's weights, split over TP by the
  intermediate size (kt_ep_wrapper.py:5254-5261 `create_weights(num_experts=self.num_gpu_experts, ...)`).
- kt's GPU buffers: one staging buffer of chunked_prefill_size x hidden (bf16) on rank 0, shared by all layers
  (kt_ep_wrapper.py:568-621, 5198, 5271-5279); with --kt-gpu-prefill-token-threshold, one full MoE layer of
  experts for layerwise prefill (SharedFullContext, kt_ep_wrapper.py:5753-5814, 6178-6275).
- RAM: kt-kernel keeps every routed expert in its CPU format, GPU-placed ones included (kvcache-ai/ktransformers
  #2084), split over the thread pools by the intermediate size, plus per-pool buffers sized by
  chunked_prefill_size (kt-kernel operators/amx/moe_base.hpp `AMX_MOE_BASE::init`, one shared allocation per
  NUMA partition: `shared_mem_buffer_numa.alloc`).
- MLA absorbed weights: after loading, each attention layer keeps kv_b_proj and stores new BF16 `w_kc`/`w_vc`
  (models/deepseek_common/deepseek_weight_loader.py:516-521 dequantises an FP8 block-128 kv_b_proj to BF16,
  :556-578 `.contiguous()` copies into w_kc/w_vc): heads x (qk_nope + v) x kv_lora_rank x 2 B per layer, split
  over TP by heads (`mla_copy_bytes`).
- DeepSeek-V3.2's NSA indexer adds index_head_dim + index_head_dim/128 x 4 bytes (uint8 with FP32 scales) per
  token and layer to the KV pool (model_runner_kv_cache_mixin.py:137-159, mem_cache/memory_pool.py:1792-1817).
- A multimodal model's unset mem_fraction_static is scaled by 0.95 x the ViT-size factor
  (server_args.py:1417-1421, 6707-6743 `adjust_mem_fraction_for_vlm`).
- FP8 block-quantised MoE weights need (moe_intermediate / tp) % block_n == 0, and % block_k too at TP > 1
  (layers/quantization/fp8.py:854-866); sglang-kt raises ValueError at load otherwise.
- The layerwise-prefill layer is built on the first prompt over the threshold (kt_ep_wrapper.py:5749-5756,
  6178-6309); only MXFP4 reserves it before KV sizing (model_runner.py:593-607), so without --max-total-tokens
  the KV pool takes its room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from kt_launch.core.host import GpuFacts
from kt_launch.core.memory import MOE_LORA_FIT, Fit, FitStatus, GpuMemory, MemoryPlan, NodeMemory, RamMemory, WeightBytes
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.expert_sources import consumed_weights, read_expert_bytes
from kt_launch.resolve.preflight import artifacts
from kt_launch.resolve.isa import choose_variant, server_variant_override
from kt_launch.resolve.methods import cpu_format, gpu_experts_in_ram, ram_from_headers

MiB, GiB = 1 << 20, 1 << 30
# Memory SGLang cannot use before it measures: CUDA context, cuBLAS workspace, NCCL. `total_gpu_memory` is what is
# free after `init_torch_distributed` (model_runner.py:402, 820-907), not the card's size. An estimate.
CUDA_CONTEXT_BYTES = 768 * MiB
# Room for one 4k-token request: below this a launch is pointless, so it is the "minimum KV" of the checks.
MIN_KV_TOKENS = 4096
FIT_TARGETS = (8192, 32768, 131072)  # the KV targets `kt-launch fit` tabulates


# -- SGLang's defaults ----------------------------------------------------------------------------

def sglang_gpu_defaults(gpu_mem_mib: float | None, tp: int) -> tuple[int, int]:
    """(chunked_prefill_size, cuda_graph_max_bs) SGLang picks for a GPU of this size (server_args.py:1287-1350)."""
    if gpu_mem_mib is None:
        return 4096, 160
    if gpu_mem_mib < 20 * 1024:
        return 2048, 8
    if gpu_mem_mib < 35 * 1024:
        return 2048, 24 if tp < 4 else 80
    if gpu_mem_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if gpu_mem_mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def sglang_reserved_mib(tp: int, chunk: int, cuda_graph_max_bs: int, pp: int = 1,
                        max_prefill_tokens: int = 16384) -> float:
    """SGLang's own estimate of the activation, CUDA-graph and NCCL room, in MiB (server_args.py:1372-1400)."""
    reserved = 512.0
    reserved += max(chunk if chunk > 0 else max_prefill_tokens, 2048) * 1.5
    reserved += cuda_graph_max_bs * 2
    reserved += tp * pp / 8 * 1024
    return reserved


def default_mem_fraction(gpu_mem_mib: float, tp: int, chunk: int, cuda_graph_max_bs: int, pp: int = 1,
                         max_prefill_tokens: int = 16384) -> float:
    """SGLang's mem_fraction_static when unset (server_args.py:1372-1415; no DP attention, piecewise CUDA graph
    or speculative decoding, which kt-launch does not plan)."""
    reserved = sglang_reserved_mib(tp, chunk, cuda_graph_max_bs, pp, max_prefill_tokens)
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)


def vlm_mem_factor(model) -> float:
    """`adjust_mem_fraction_for_vlm` (server_args.py:6707-6743): 0.95 x clamp(1 - 0.1 x (ViT size / ViT-L - 1),
    0.8, 1.05), applied to an unset mem_fraction_static of a multimodal model (ibid. :1417-1421). 1.0 without a
    vision tower. Kimi-K2.5 (27 layers x 1152): 0.91."""
    if not getattr(model, "vision_layers", 0):
        return 1.0
    ratio = model.vision_layers * model.vision_hidden ** 2 / (24 * 1024 ** 2)
    return 0.95 * max(0.8, min(1.05, 1.0 - 0.1 * (ratio - 1.0)))


# -- sizes ------------------------------------------------------------------------------------------

def kv_element_bytes(model, extra_args=()) -> int:
    """KV-cache element size: `--kv-cache-dtype fp8_*` in server.extra_args, else the model dtype ("auto")."""
    args = [str(a) for a in extra_args]
    for i, a in enumerate(args):
        v = a.split("=", 1)[1] if a.startswith("--kv-cache-dtype=") else (
            args[i + 1] if a == "--kv-cache-dtype" and i + 1 < len(args) else None)
        if v is not None and v.startswith("fp8"):
            return 1
        if v is not None and v.startswith("fp4"):
            return 1  # packed fp4 plus scales: about a byte (cell_size // 2 + scales); rounded up
    return 4 if model.torch_dtype in ("float32", "float") else 2


SWA_FULL_TOKENS_RATIO = 0.8  # server_args.py:665 `swa_full_tokens_ratio`
DSV4_PAGE = 256  # server_args.py:1801-1806: DeepSeek-V4's page_size
DSV4_SWA_RATIO = 0.1  # server_args.py:1841-1849: DeepSeek-V4's default, raised to fit 2 chunks when both are set


def swa_ratio_of(model, extra_args=(), chunk: int | None = None, max_total_tokens: int | None = None,
                 overlap: bool = True) -> float:
    """SGLang's swa_full_tokens_ratio for this model: --swa-full-tokens-ratio, else 0.8 (server_args.py:665); for
    DeepSeek-V4 a value left at 0.8 becomes 0.1, or min(0.9, max(0.1, chunks x chunk x 1.05 / max_total_tokens))
    when --chunked-prefill-size and --max-total-tokens are both set (chunks = 1 with --disable-overlap-schedule, else
    2; server_args.py:1841-1851). A value SGLang's parser refuses keeps the default (the parser says so)."""
    got = _extra_arg(extra_args, "--swa-full-tokens-ratio")
    try:
        ratio = float(got) if got is not None else SWA_FULL_TOKENS_RATIO
    except ValueError:
        ratio = SWA_FULL_TOKENS_RATIO
    if not 0 < ratio <= 1.0:
        ratio = SWA_FULL_TOKENS_RATIO
    if getattr(model, "attention", "") == "compressed" and ratio == SWA_FULL_TOKENS_RATIO:
        ratio = DSV4_SWA_RATIO
        if chunk and max_total_tokens:
            ratio = min(0.9, max(0.1, (2 if overlap else 1) * chunk * 1.05 / max_total_tokens))
    return ratio


def dsv4_bytes_per_token(model, swa_ratio: float) -> float:
    """Bytes per "full" token of DeepSeek-V4's compressed pool (model_executor/memory_profiler.py:64-101
    `DSv4MemoryCalculator.get_bytes_per_full_token`, FP8 layout: compute capability >= 8.9, where SGLang forces an
    FP8 KV cache, server_args.py:1815-1827): the uncompressed sliding window of every layer at swa_ratio, the c4
    layers' KV at 1/4 and their indexer keys at 1/4, the c128 layers' KV at 1/128, and the compression states (ring
    of 8 / 128 per window of 128) at swa_ratio. kv = nope + 2 x rope + 8; indexer = d + d / 128 x 4. Layers =
    len(compress_ratios). The pool holds as many full tokens as the rest divided by this, rounded down to pages of
    256 (server_args.py:1805); SGLang's generic cell (kt-launch's old figure, 30,444 B for V4-Flash:
    model_runner_kv_cache_mixin.py:57-95) only seeds it."""
    r = model.compress_ratios
    kv = model.qk_nope_head_dim + 2 * model.qk_rope_head_dim + 8
    ih = model.index_head_dim or 128
    indexer = ih + ih // 128 * 4
    head = model.qk_nope_head_dim + model.qk_rope_head_dim
    c4, c128 = r.count(4), r.count(128)
    c4_state, c128_state, c4_index_state = 2 * 2 * head * 4, 2 * head * 4, 2 * 2 * ih * 4
    window = model.window or 128
    return (swa_ratio * kv * len(r) + kv * c4 / 4 + kv * c128 / 128 + indexer * c4 / 4
            + swa_ratio * (8 / window) * (c4_state + c4_index_state) * c4
            + swa_ratio * (128 / window) * c128_state * c128)


def kv_bytes_per_token(model, tp: int, elem: int = 2, swa_ratio: float | None = None) -> int:
    """Bytes of KV cache one token takes on one GPU of the TP group (0 when config.json lacks the shape).
    DeepSeek-V3.2 adds its NSA indexer's uint8 keys with one FP32 scale per 128 (memory_pool.py:1792-1817); its
    FP8 cache stores the latent in FP8 with FP32 scales per 128 and the rope part in BF16: kv_lora_rank +
    kv_lora_rank / 128 x 4 + 2 x qk_rope_head_dim = 656 B per layer (model_runner_kv_cache_mixin.py:372-386,
    backends other than trtllm)."""
    if model.attention == "mla":
        ihd = getattr(model, "index_head_dim", 0)
        indexer = (ihd + ihd // 128 * 4) * model.num_layers if ihd else 0
        if ihd and elem == 1:
            latent = model.kv_lora_rank + model.kv_lora_rank // 128 * 4 + 2 * model.qk_rope_head_dim
            return latent * model.num_layers + indexer
        return (model.kv_lora_rank + model.qk_rope_head_dim) * model.num_layers * elem + indexer
    if model.attention == "compressed":
        return math.ceil(dsv4_bytes_per_token(model, DSV4_SWA_RATIO if swa_ratio is None else swa_ratio))
    if model.attention == "gqa" and model.num_kv_heads:
        layers = getattr(model, "kv_layers", 0) or model.num_layers  # hybrid: the full-attention layers only
        per_layer = max(1, model.num_kv_heads // tp) * (model.head_dim + model.v_head_dim) * elem
        swa = getattr(model, "swa_layers", 0)
        if swa:  # model_runner_kv_cache_mixin.py:410-470: full tokens = rest / (F x n_full + ratio x S x n_swa)
            r = SWA_FULL_TOKENS_RATIO if swa_ratio is None else swa_ratio
            swa_layer = max(1, (model.swa_kv_heads or model.num_kv_heads) // tp) * (
                (model.swa_head_dim or model.head_dim) + (model.swa_v_head_dim or model.v_head_dim)) * elem
            return math.ceil(per_layer * layers + r * swa_layer * swa)
        return per_layer * layers
    return 0


MAMBA_FULL_MEMORY_RATIO = 0.9  # sglang server_args.py:850 `mamba_full_memory_ratio`


def linear_state_bytes(model, tp: int) -> int:
    """Bytes of one request's linear-attention (Gated-DeltaNet) state on one TP rank, as SGLang sizes it:
    configs/qwen3_next.py:284-300 `mamba2_cache_params` -> configs/mamba_utils.py `Mamba2StateShape.create`
    (conv_dim = value heads x value dim + 2 x key heads x key dim, key heads padded up to a multiple of TP; conv state
    conv_dim / tp x (kernel - 1) in bf16; temporal state value heads / tp x value dim x key dim in mamba_ssm_dtype)
    and `mamba_cache_per_req` (their sum x the linear layers). Qwen3-Next at TP 1: 36 x 2.05 MiB = 73.7 MiB."""
    if not getattr(model, "linear_layers", 0):
        return 0
    groups = model.linear_key_heads
    if groups % tp:
        groups += tp - groups  # extra_groups_for_head_shards
    conv_dim = model.linear_value_heads * model.linear_value_head_dim + 2 * groups * model.linear_key_head_dim
    conv = conv_dim // tp * (model.linear_conv_kernel - 1) * 2
    temporal = (model.linear_value_heads // tp) * model.linear_value_head_dim * model.linear_key_head_dim
    return (conv + temporal * model.linear_ssm_bytes) * model.linear_layers


def _extra_arg(args, flag: str) -> str | None:
    args = [str(a) for a in args]
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def state_pool(s: "Setup", rest: int) -> tuple[int, int]:
    """(bytes, requests) of the linear-attention state pool on one GPU out of `rest`, the bytes the KV pool would get
    otherwise (model_runner_kv_cache_mixin.py:253-346 `handle_max_mamba_cache`): --max-mamba-cache-size requests; else
    --max-running-requests with --disable-radix-cache; else rest x ratio / (1 + ratio), ratio =
    --mamba-full-memory-ratio (0.9). (0, 0) for a model without linear attention."""
    per = linear_state_bytes(s.model, s.tp)
    if not per:
        return 0, 0
    if s.mamba_requests is not None:
        n = s.mamba_requests
    else:
        n = int(max(0, rest) * s.mamba_ratio / (1 + s.mamba_ratio)) // per
    return n * per, n


def kv_and_state_bytes(s: "Setup", kv_tokens: int) -> int:
    """GPU bytes that leave `kv_tokens` of KV beside SGLang's linear-attention state pool (which takes its share of
    the same rest): kv x (1 + ratio) with the ratio rule, kv + the fixed pool otherwise."""
    kv = kv_tokens * kv_bytes_per_token(s.model, s.tp, s.kv_elem, s.swa_ratio)
    per = linear_state_bytes(s.model, s.tp)
    if not per:
        return kv
    if s.mamba_requests is not None:
        return kv + s.mamba_requests * per
    return math.ceil(kv * (1 + s.mamba_ratio))


def nonexpert_share(w: WeightBytes, model, tp: int) -> int:
    """Non-expert bytes one TP rank holds."""
    kv = w.kv_proj_bytes
    if kv and model.num_kv_heads:
        kv = math.ceil(kv * max(1, model.num_kv_heads // tp) / model.num_kv_heads)
    else:
        kv = math.ceil(kv / tp)
    return w.replicated_bytes + math.ceil(w.sharded_bytes / tp) + kv


def mla_copy_bytes(model, tp: int) -> int:
    """BF16 w_kc + w_vc one TP rank stores besides kv_b_proj (deepseek_weight_loader.py:516-521, 556-578): heads x
    (qk_nope_head_dim + v_head_dim) x kv_lora_rank x 2 B per layer; heads are split over TP. DeepSeek-V3 TP1:
    128 x 256 x 512 x 2 x 61 = 2.05 GB; Kimi-K2 (64 heads): 1.02 GB."""
    if model.attention != "mla" or not (model.num_attention_heads and model.qk_nope_head_dim and model.v_head_dim):
        return 0
    heads = max(1, model.num_attention_heads // max(1, tp))
    return heads * (model.qk_nope_head_dim + model.v_head_dim) * model.kv_lora_rank * 2 * model.num_layers


def fp8_block_problem(model, tp: int) -> str | None:
    """Why FP8 block-quantised experts cannot be split over `tp` ranks (fp8.py:854-866), or None."""
    block = getattr(model, "weight_block", ())
    if model.quant_method != "fp8" or len(block) != 2:
        return None
    part = model.moe_intermediate_size / tp
    for b, side, needs in ((block[0], "gate/up output", True), (block[1], "down input", tp > 1)):
        if needs and (part != int(part) or int(part) % b):
            return (f"moe_intermediate_size {model.moe_intermediate_size} / server.tp_size {tp} = {part:g} is not a "
                    f"multiple of the FP8 weight block {b} ({side}; sglang layers/quantization/fp8.py:854-866 raises "
                    "ValueError at load)")
    return None


def expert_avg_bytes(w: WeightBytes, model) -> float:
    """Bytes of one routed expert (weights and scales) in model.path's format, averaged over its MoE layers."""
    layers = [n for n in w.expert_by_layer.values() if n]
    return sum(layers) / (len(layers) * model.num_experts) if layers and model.num_experts else 0.0


def gpu_experts_total(model, per_layer: int, ratio: float | None) -> int:
    """Experts sglang-kt places on the GPU in all (kt_ep_wrapper.py:4589-4612)."""
    layers = model.kt_moe_layers or len(model.moe_layers)
    if ratio is not None:
        return int(layers * model.num_experts * ratio)
    return per_layer * layers


def loaded_share(model) -> float:
    """The share of sglang-kt's GPU experts that a MoE layer loads. sglang-kt counts MoE layers by
    first_k_dense_replace and moe_layer_freq only (kt_ep_wrapper.py:4546-4574), so a model whose MoE layers follow
    another rule (Llama-4's interleave_moe_layer_step 2: 48 counted, 24 real; ERNIE's moe_layer_start_index 1: 28
    and 27) spreads its GPU experts over layers that have no FusedMoE too, and only the real ones hold weights."""
    counted = model.kt_moe_layers or len(model.moe_layers)
    return min(1.0, len(model.moe_layers) / counted) if counted else 1.0


def cpu_expert_bytes(method: str, hidden: int, inter: int, repacked: bool = False) -> tuple[int, str] | None:
    """Bytes of one expert (gate, up, down) in kt-kernel's CPU format, and how that was counted.

    AMXINT4/AMXINT8: packed weights plus one f32 scale per output row (kt-kernel operators/amx/la/amx_buffers.hpp
    BufferB `required_size`: n*k*bits/8 + 4*n; the converter writes the same `.scale` rows). BF16: 2 B/param.
    FP8: 1 B/param plus f32 128x128 block scales (`weight_scale_inv`); FP8_PERCHANNEL: f32 per row. RAWINT4
    (compressed-tensors, group 32): 0.5 + 4/32 B/param, as kt-kernel's AMX RAWINT4 kernel keeps FP32 group scales
    in RAM (operators/amx/k2-moe.hpp, la/amx_buffers.hpp; the checkpoint's BF16 scales give 0.5625). GPTQ_INT4
    (group 128, fp16 scales and packed zeros): 0.5 + (2 + 0.5)/128. MXFP4: 0.5 + 1/32, the checkpoint's ue8m0
    byte per 32, as the AMX / AVX-512 class keeps it; `repacked` (the method table's `repacked_on` for the CPU
    variant: avx2's AVX2MXFP4_MOE, operators/avx2/mxfp4-moe.hpp:121) 0.5 + 4/32 with FP32 group scales.
    NVFP4: 0.5 + 1/16. MXFP8: 1 + 1/32. LLAMAFILE: Q4_K, 4.5 bits."""
    p = 3 * hidden * inter
    rows = 2 * inter + hidden
    blocks = 2 * math.ceil(inter / 128) * math.ceil(hidden / 128) + math.ceil(hidden / 128) * math.ceil(inter / 128)
    m = method.upper()
    table = {
        "AMXINT4": p // 2 + 4 * rows, "AMXINT4_SFT": p // 2 + 4 * rows,
        "AMXINT8": p + 4 * rows, "AMXINT8_SFT": p + 4 * rows,
        "BF16": 2 * p, "AMXBF16": 2 * p, "AMXBF16_SFT": 2 * p,
        "FP8": p + 4 * blocks, "FP8_PERCHANNEL": p + 4 * rows,
        "RAWINT4": p // 2 + 4 * p // 32, "GPTQ_INT4": p // 2 + math.ceil(2.5 * p / 128),
        "MXFP4": p // 2 + (4 * p // 32 if repacked else p // 32), "NVFP4": p // 2 + p // 16, "MXFP8": p + p // 32,
        "LLAMAFILE": math.ceil(p * 4.5 / 8),
    }
    return (table[m], f"estimated for {m} from the shape") if m in table else None


def kt_pool_buffer_bytes(model, chunk: int, pools: int) -> int:
    """kt-kernel's buffers of one thread pool (NUMA partition), sized by chunked_prefill_size (moe_config.max_len)
    and shared by every MoE layer: bf16 input/gate/up/down staging for top_k x max_len rows, then the AMX pools
    for max_len*top_k + experts*M_STEP rows (int8 A buffers, f32 C buffers, 64 B per row of padding). AMX_MOE_BASE
    (moe_base.hpp); other methods' buffers are of the same order. An estimate."""
    rows = chunk * model.top_k
    h, i_p = model.hidden_size, math.ceil(model.moe_intermediate_size / max(1, pools))
    io = 2 * rows * (2 * h + 2 * i_p)
    p = rows + model.num_experts * 32
    amx = (p * h + 4 * p) + 2 * (4 * p * i_p) + (p * i_p + 4 * p) + 4 * p * h + 5 * 64 * p
    return io + amx


# -- the plan -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """What the arithmetic reads, gathered once from the input and values: a fleet replica or `kt-launch fit`
    changes `tp` and `kv_target` and calls `plan()` again."""

    model: object
    weights: WeightBytes | None
    gpus: tuple[GpuFacts, ...]  # the TP group (GPUs of known size)
    tp: int
    mem_fraction: float | None  # the user's, or None: SGLang's default per GPU size
    chunk_user: int | None
    kv_elem: int
    kv_target: int
    kv_target_key: str
    max_total_tokens: int | None  # the user's, or the one kt-launch derived (SGLang caps the pool by it)
    layerwise: bool
    pools: int
    numa_nodes: tuple[int, ...]
    cpu_method: str
    cpu_experts: tuple[int, str] | None  # (bytes, source) from headers
    ram_total: int
    ram_available: int
    node_memory: dict[int, int | None]  # None = unknown, 0 = no memory (core/host.NumaNode)
    moe_lora: bool = False
    gpu_margin: int = 0  # fit.gpu_margin_mib in bytes, kept free on every GPU
    cpu_variant: str = ""  # kt-kernel's CPU variant on this host ("" = CPU flags unknown)
    gpus_unsized: int = 0  # GPUs of the TP group whose memory size is unknown (0 in the host facts)
    mamba_ratio: float = MAMBA_FULL_MEMORY_RATIO  # --mamba-full-memory-ratio (hybrid linear-attention models)
    mamba_requests: int | None = None  # the state pool's requests when fixed (--max-mamba-cache-size, or
    #                                    --max-running-requests with --disable-radix-cache); None = by the ratio
    swa_ratio: float | None = None  # swa_full_tokens_ratio (hybrid SWA, DeepSeek-V4), `swa_ratio_of`; None = default
    speculative: str | None = None  # --speculative-algorithm among the pass-through flags (the plan does not size it)
    # What this set-up computed once and every reader shares (each GPU's fixed costs, the fit per KV target): a
    # resolve makes one Setup (the memory_setup step), so the arithmetic runs once however many checks read it.
    # None of these depends on the KV target or max_total_tokens, so `with_values` shares it.
    computed: dict = field(default_factory=dict, compare=False, repr=False)


def setup_from(inp: ResolveInput, values: dict[str, Resolved], tp: int | None = None,
               kv_target: int | None = None) -> Setup | None:
    """None when config.json was not read (nothing can be sized)."""
    m = inp.model
    if m is None:
        return None
    cfg = inp.config
    if tp is None:
        r = values.get("server.tp_size")
        tp = (r.value if r is not None and r.value else None) or cfg.server.tp_size or 1
    mtt = cfg.server.max_total_tokens
    if kv_target is None:
        kv_target, key = (mtt, "server.max_total_tokens") if mtt else (cfg.fit.kv_tokens, "fit.kv_tokens")
    else:
        key = "kv target"
    derived_mtt = values.get("server.max_total_tokens")
    if not mtt and derived_mtt is not None and derived_mtt.source == "derived" and key != "kv target":
        mtt = derived_mtt.value
    pools_r = values.get("kt.threadpool_count")
    pools = (pools_r.value if pools_r is not None and pools_r.value else None) or 1
    numa_r = values.get("kt.numa_nodes")
    numa = tuple(numa_r.value) if numa_r is not None and numa_r.value else \
        tuple(n.id for n in inp.host.cpu_numa_nodes)[:pools]
    method = cpu_format(lambda k: values[k].value if k in values else None)
    group = tuple(inp.host.gpus[:tp])
    sized = tuple(g for g in group if isinstance(g.memory_bytes, int) and g.memory_bytes > 0)
    flags = inp.host.cpu.flags
    variant = choose_variant(flags, server_variant_override(inp)[0]).variant if flags else ""
    extra = cfg.server.extra_args
    flags = [str(a) for a in extra]
    mamba_ratio, mamba_requests = MAMBA_FULL_MEMORY_RATIO, None
    try:
        got = _extra_arg(extra, "--mamba-full-memory-ratio")
        mamba_ratio = float(got) if got is not None and float(got) > 0 else mamba_ratio
        got = _extra_arg(extra, "--max-mamba-cache-size")
        if got is not None:
            mamba_requests = max(0, int(got))
        elif "--disable-radix-cache" in [str(a) for a in extra] and cfg.server.max_running_requests:
            mamba_requests = cfg.server.max_running_requests
    except ValueError:
        pass  # SGLang's own parser refuses the value; the plan keeps SGLang's default
    return Setup(
        model=m, weights=inp.weights, gpus=sized if len(sized) == len(group) else (), tp=tp,
        mem_fraction=cfg.server.mem_fraction_static, chunk_user=cfg.server.chunked_prefill_size,
        kv_elem=kv_element_bytes(m, cfg.server.extra_args), kv_target=int(kv_target), kv_target_key=key,
        max_total_tokens=mtt, layerwise=bool(cfg.kt.gpu_prefill_token_threshold),
        pools=pools, numa_nodes=numa, cpu_method=method, cpu_experts=_cpu_expert_source(inp, values, method, variant),
        ram_total=inp.host.memory_total_bytes, ram_available=inp.host.memory_available_bytes,
        node_memory={n.id: n.memory_bytes for n in inp.host.numa}, moe_lora=cfg.moe_lora is not None,
        gpu_margin=int(cfg.fit.gpu_margin_mib * MiB), cpu_variant=variant, gpus_unsized=len(group) - len(sized),
        mamba_ratio=mamba_ratio, mamba_requests=mamba_requests,
        # --disable-hybrid-swa-memory: every sliding-window layer full (Llama-4, gpt-oss); DeepSeek-V4 is not planned
        # without its compressed pool
        swa_ratio=1.0 if getattr(m, "swa_layers", 0) and "--disable-hybrid-swa-memory" in flags
        else swa_ratio_of(m, extra, cfg.server.chunked_prefill_size, mtt, "--disable-overlap-schedule" not in flags),
        speculative=_extra_arg(extra, "--speculative-algorithm"))


def _cpu_expert_source(inp: ResolveInput, values: dict[str, Resolved], method: str,
                       variant: str = "") -> tuple[int, str] | None:
    """CPU expert bytes from headers: kt.weight_path's (AMX or HF tensors, GGUF size) or model.path's routed
    experts (layers SGLang loads only) when kt-kernel reads the HF checkpoint. RAWINT4 reads the checkpoint, but
    its AMX / AVX-512 kernel keeps FP32 scales in RAM (`cpu_expert_bytes`), so there the headers do not give the
    RAM figure; the avx2 kernel (operators/avx2/rawint4-moe.hpp) keeps the checkpoint's BF16 scales."""
    if not ram_from_headers(variant, method.upper()):
        return None
    try:
        got = read_expert_bytes(inp, values)
    except (KeyError, AttributeError):
        return None
    if got is None:
        return _recorded_expert_bytes(inp, values)
    n, src = got
    if src == "model.path" and inp.weights is not None:
        return inp.weights.expert_bytes, "model.path headers"
    return n, f"{src} headers"


def _recorded_expert_bytes(inp: ResolveInput, values: dict[str, Resolved]) -> tuple[int, str] | None:
    """--model-facts without the checks (fit, --no-check): nothing of model.path is read here, but the record holds
    its routed experts' bytes from the headers, which are what kt-kernel loads when it reads model.path. The RAM
    check then judges the same figure as a plan that read the dir (issue 23 item 5)."""
    if artifacts(inp) is not None or inp.weights is None:
        return None
    got = consumed_weights(inp, values)
    if got is None or got[1] != inp.config.model.path:
        return None
    return inp.weights.expert_bytes, "model.path headers (--model-facts)"


def with_values(s: Setup, values: dict[str, Resolved]) -> Setup:
    """The set-up with the server.max_total_tokens a step derived after it was made (what `setup_from` would read
    from the values now); shares what `s` computed."""
    mtt = values.get("server.max_total_tokens")
    if s.max_total_tokens or s.kv_target_key == "kv target" or mtt is None or mtt.source != "derived":
        return s
    return replace(s, max_total_tokens=mtt.value)


def memory_plan(inp: ResolveInput, values: dict[str, Resolved], setup: Setup | None = None) -> MemoryPlan | None:
    """The plan for the resolved values (kt.num_gpu_experts, kt.gpu_experts_ratio), from the resolve's set-up (the
    memory_setup step's value) when given, else made here."""
    s = setup_from(inp, values) if setup is None else with_values(setup, values)
    if s is None:
        return None
    n = values.get("kt.num_gpu_experts")
    ratio = values.get("kt.gpu_experts_ratio")
    return plan(s, n.value if n is not None and n.value else 0, ratio.value if ratio is not None else None)


def mem_fraction_of(s: Setup) -> tuple[float, int, int]:
    """(mem_fraction_static, chunked_prefill_size, cuda_graph_max_bs) SGLang runs the TP group with."""
    smallest = min((x.memory_bytes for x in s.gpus), default=0) / MiB or None
    chunk_default, graph_bs = sglang_gpu_defaults(smallest, s.tp)
    chunk = s.chunk_user if s.chunk_user is not None else chunk_default
    if s.mem_fraction is not None:
        return s.mem_fraction, chunk, graph_bs
    if smallest is None:
        return 0.88, chunk, graph_bs  # server_args.py:1410-1414 without a GPU size
    # A GPU smaller than SGLang's own reserve gets no static pool (0), never a negative share; KT-E150 says why
    mf = max(0.0, default_mem_fraction(smallest, s.tp, chunk, graph_bs))
    return mf * vlm_mem_factor(s.model), chunk, graph_bs


def _gpu_fixed(s: Setup, g: GpuFacts, rank: int) -> tuple[float, int, int, int, int]:
    """(mem_fraction, reserve, non-expert share with the MLA copies, kt buffers, chunk) of one GPU before experts
    and KV, computed once per set-up (`gpu_fixed_costs`). The reserve includes fit.gpu_margin_mib."""
    key = ("gpu_fixed", rank, g.index)
    if key not in s.computed:
        s.computed[key] = gpu_fixed_costs(s, g, rank)
    return s.computed[key]


def gpu_fixed_costs(s: Setup, g: GpuFacts, rank: int) -> tuple[float, int, int, int, int]:
    """The arithmetic of `_gpu_fixed` (read it through `_gpu_fixed`, which keeps the answer)."""
    total = g.memory_bytes
    mf, chunk, _ = mem_fraction_of(s)
    usable = max(0, total - used_of(g) - CUDA_CONTEXT_BYTES)
    reserve = total - int(usable * mf) + s.gpu_margin
    m, w = s.model, s.weights
    nonexp = nonexpert_share(w, m, s.tp) + mla_copy_bytes(m, s.tp) if w is not None else 0
    buf = (max(chunk, 0) or 8192) * m.hidden_size * 2 if rank == 0 else 0
    if s.layerwise and w is not None:
        buf += layerwise_bytes(s)
    return mf, reserve, nonexp, buf, chunk


def used_of(g: GpuFacts) -> int:
    """Memory other processes hold on this GPU (nvidia-smi memory.used in the host facts). SGLang's
    `total_gpu_memory` is torch.cuda.mem_get_info's *free* memory after start-up, the minimum over the TP group
    (model_runner.py:402, 907-932; utils/common.py:508-609, all_reduce MIN), and both the static pool
    (mem_fraction_static x that) and the KV rest (model_runner_kv_cache_mixin.py:253-286) are taken from it; only
    the default mem_fraction_static reads the card's total (nvidia-smi memory.total, utils/common.py:1724-1755)."""
    used = getattr(g, "used_bytes", 0)
    return used if isinstance(used, int) and 0 < used <= g.memory_bytes else 0


def layerwise_bytes(s: Setup) -> int:
    """The full MoE layer sglang-kt builds for layerwise prefill, one rank's share (kt_ep_wrapper.py:6178-6309)."""
    return math.ceil(expert_avg_bytes(s.weights, s.model) * s.model.num_experts / s.tp) if s.weights else 0


def per_count_bytes(s: Setup) -> int:
    """GPU bytes one more expert per MoE layer costs on each rank."""
    if s.weights is None:
        return 0
    layers = s.model.kt_moe_layers or len(s.model.moe_layers)
    return math.ceil(expert_avg_bytes(s.weights, s.model) * layers * loaded_share(s.model) / s.tp)


def room_for_experts(s: Setup, kv_tokens: int) -> list[tuple[GpuFacts, int]]:
    """Per GPU: bytes left for GPU experts once reserve, non-expert weights, kt buffers and `kv_tokens` are placed."""
    need = kv_and_state_bytes(s, kv_tokens)
    out = []
    for rank, g in enumerate(s.gpus):
        _, reserve, nonexp, buf, _ = _gpu_fixed(s, g, rank)
        out.append((g, g.memory_bytes - reserve - nonexp - buf - need))
    return out


def fit(s: Setup, kv_tokens: int | None = None) -> Fit:
    """The largest per-layer count that leaves `kv_tokens` (default: the KV target) on every GPU of the group,
    computed once per set-up and KV target (`compute_fit`). Its status says NO_ROOM when not even 0 experts leave
    that room (the checks make that an error finding; the count is then -1), MOE_LORA in MoE-LoRA mode when the KV
    fits (every expert stays on the CPU: 0), NO_FACTS when nothing could be sized."""
    kv = s.kv_target if kv_tokens is None else kv_tokens
    key = ("fit", kv)
    if key not in s.computed:
        s.computed[key] = compute_fit(s, kv)
    return s.computed[key]


def compute_fit(s: Setup, kv: int) -> Fit:
    """The arithmetic of `fit` (read it through `fit`, which keeps the answer)."""
    if not s.gpus:
        return Fit(0, kv, "no GPU facts", status=FitStatus.NO_FACTS)
    if s.weights is None:
        return Fit(0, kv, "no checkpoint headers", status=FitStatus.NO_FACTS)
    cost = per_count_bytes(s)
    best, gpu = None, None
    for g, room in room_for_experts(s, kv):
        n = -1 if room < 0 else (s.model.num_experts if cost == 0 else room // cost)
        if best is None or n < best:
            best, gpu = n, g.index
    by = f"gpu {gpu}"
    if best < 0:
        return Fit(-1, kv, by, cost, gpu, FitStatus.NO_ROOM)
    if s.moe_lora:
        return Fit(0, kv, MOE_LORA_FIT, cost, status=FitStatus.MOE_LORA)
    if best >= s.model.num_experts:
        return Fit(s.model.num_experts, kv, "experts per layer", cost)
    return Fit(best, kv, by, cost, gpu)


def fitted_kv_tokens(s: Setup, num_gpu_experts: int, ratio: float | None = None) -> int:
    """KV tokens every GPU of the group keeps with this expert count: the --max-total-tokens kt-launch passes."""
    bpt = kv_bytes_per_token(s.model, s.tp, s.kv_elem, s.swa_ratio)
    if not s.gpus or s.weights is None or not bpt:
        return 0
    exp = math.ceil(gpu_experts_total(s.model, num_gpu_experts, ratio) * loaded_share(s.model)
                    * expert_avg_bytes(s.weights, s.model) / s.tp)
    rest = min(room - exp for _, room in room_for_experts(s, 0))
    kv = max(0, rest - state_pool(s, rest)[0]) // bpt
    return kv // DSV4_PAGE * DSV4_PAGE if s.model.attention == "compressed" else kv


def plan(s: Setup, num_gpu_experts: int, ratio: float | None = None) -> MemoryPlan:
    m, w = s.model, s.weights
    total_experts = gpu_experts_total(m, num_gpu_experts, ratio)
    avg = expert_avg_bytes(w, m) if w is not None else 0.0
    exp_rank = math.ceil(total_experts * loaded_share(m) * avg / s.tp)
    bpt = kv_bytes_per_token(m, s.tp, s.kv_elem, s.swa_ratio)
    gpus: list[GpuMemory] = []
    mf, chunk, _ = mem_fraction_of(s)
    copies = mla_copy_bytes(m, s.tp)
    for rank, g in enumerate(s.gpus if w is not None else ()):
        mf, reserve, nonexp, buf, chunk = _gpu_fixed(s, g, rank)
        room = g.memory_bytes - reserve - nonexp - buf - exp_rank
        state, reqs = state_pool(s, room)  # SGLang sizes the linear-attention state first, from the same rest
        kv = max(0, room - state) // bpt if bpt else 0
        kv = min(kv, s.max_total_tokens) if s.max_total_tokens else kv  # SGLang: min(profiled, requested)
        if m.attention == "compressed":  # DeepSeek-V4: whole pages of 256 (server_args.py:1805, memory_profiler.py:106)
            kv = kv // DSV4_PAGE * DSV4_PAGE
        gpus.append(GpuMemory(g.index, g.name, g.memory_bytes, nonexp + buf, exp_rank, bpt, kv, reserve,
                              room - kv * bpt - state, nonexp, buf, copies, s.gpu_margin, used_of(g), state, reqs))
    notes = []
    if s.gpus_unsized:
        notes.append(f"GPU side not sized: {s.gpus_unsized} GPU(s) of the TP group have no memory size in the host "
                     "facts (memory_bytes 0)")
    elif w is None:
        notes.append("GPU side not sized: the model.path safetensors headers were not read")
    elif not s.gpus:
        notes.append("GPU side not sized: no GPU facts (plan with --host-facts FILE)")
    ratio = DSV4_SWA_RATIO if s.swa_ratio is None and m.attention == "compressed" else (
        SWA_FULL_TOKENS_RATIO if s.swa_ratio is None else s.swa_ratio)
    if m.attention == "compressed" and gpus:
        notes.append(f"DeepSeek-V4 compressed KV pool: {bpt} B per token (swa_full_tokens_ratio {ratio:g}: the "
                     f"sliding window of {len(m.compress_ratios)} layers for that share of the tokens, the c4 / c128 "
                     "layers' compressed KV and indexer for all; sglang-kt's DSv4MemoryCalculator)")
    elif getattr(m, "swa_layers", 0) and gpus:
        notes.append(f"sliding-window KV: {m.swa_layers} of {m.num_layers} layers keep swa_full_tokens_ratio "
                     f"{ratio:g} of the tokens the {m.kv_layers} full-attention layers keep (SGLang's hybrid SWA pool)")
    if w is not None and w.skipped_bytes and not s.speculative:
        notes.append(f"{w.skipped_bytes / GiB:.1f} GiB of multi-token-prediction / next-n tensors (mtp.*, layers >= "
                     f"num_hidden_layers {m.num_layers}) not counted: SGLang loads them only with speculative decoding")
    per = linear_state_bytes(m, s.tp)
    if per and gpus:
        how = ("--max-mamba-cache-size / --max-running-requests" if s.mamba_requests is not None else
               f"mamba_full_memory_ratio {s.mamba_ratio:g}: state / KV = {s.mamba_ratio:g}")
        notes.append(f"linear-attention state pool: {per / MiB:.1f} MiB per request ({m.linear_layers} Gated-DeltaNet "
                     f"layers), {gpus[0].state_requests} requests = {gpus[0].state_bytes / GiB:.1f} GiB per GPU "
                     f"({how}); per-token KV only in the {m.kv_layers} full-attention layers")
    return MemoryPlan(tuple(gpus), ram_plan(s, chunk, total_experts), fit(s) if w is not None and s.gpus else None,
                      s.tp, num_gpu_experts, total_experts, mf,
                      "server.mem_fraction_static" if s.mem_fraction is not None else
                      "SGLang's default (_handle_gpu_memory_settings)" +
                      (" x the multimodal factor" if vlm_mem_factor(m) != 1.0 else ""), chunk, tuple(notes), w)


def ram_plan(s: Setup, chunk: int, gpu_total: int = 0) -> RamMemory | None:
    m = s.model
    all_experts = m.num_experts * len(m.moe_layers)
    estimated = False
    if s.cpu_experts is not None:
        experts, src = s.cpu_experts
    else:
        est = cpu_expert_bytes(s.cpu_method, m.hidden_size, m.moe_intermediate_size,
                               not ram_from_headers(s.cpu_variant, s.cpu_method.upper()))
        if est is None:
            return None
        experts = est[0] * all_experts
        src = est[1]
        if not ram_from_headers(s.cpu_variant, s.cpu_method.upper()):
            src += f" (the {s.cpu_variant} kernel's layout, not the file's)"
        estimated = True
    in_ram = gpu_experts_in_ram(s.cpu_variant, s.cpu_method)
    if not in_ram and gpu_total and all_experts:
        experts = experts * max(0, all_experts - gpu_total) // all_experts
        src += f"; GPU-placed experts skipped ({s.cpu_variant} build)"
    per_pool = kt_pool_buffer_bytes(m, max(chunk, 1), s.pools)
    other = per_pool * s.pools
    nodes = tuple(NodeMemory(node, s.node_memory.get(node), math.ceil(experts / s.pools) + per_pool)
                  for node in s.numa_nodes[:s.pools])
    return RamMemory(s.ram_total, experts, other, experts + other, src, s.ram_available, nodes, s.cpu_variant, in_ram,
                     estimated)


def tp_sizes(n_gpus: int) -> list[int]:
    """TP sizes a host allows: powers of two up to its GPU count (kt's own launcher requires a power of two)."""
    out, t = [], 1
    while t <= n_gpus:
        out.append(t)
        t *= 2
    return out
