"""The memory plan: what each GPU of the TP group and the host RAM hold, and how many GPU experts fit. Pure.

Every formula follows the sglang-kt 0.7.2 wheel (paths under site-packages/sglang/srt/) or kt-kernel 0.7.2:
- SGLang's static pool is `mem_fraction_static` of the memory free after CUDA/NCCL start-up; the KV pool gets what
  the weights leave of it (model_runner_kv_cache_mixin.py:253-286 `profile_max_num_token`: rest = available -
  total_gpu_memory * (1 - mem_fraction_static)), capped by --max-total-tokens (ibid. :620-628).
- Unset, `mem_fraction_static` comes from `_handle_gpu_memory_settings` (server_args.py:1263-1415), reproduced in
  `default_mem_fraction`; its GPU size is nvidia-smi's smallest memory.total in MiB (utils/common.py:1724-1755).
- KV bytes per token: MLA stores kv_lora_rank + qk_rope_head_dim per layer, the same on every rank
  (mem_cache/memory_pool.py:1414-1418, the pool's allocation); MHA/GQA stores max(1, kv_heads // tp) heads of
  head_dim + v_head_dim (model_runner_kv_cache_mixin.py:176-183, configs/model_config.py:774-781).
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kt_launch.core.host import GpuFacts
from kt_launch.core.memory import Fit, GpuMemory, MemoryPlan, NodeMemory, RamMemory, WeightBytes
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.expert_sources import read_expert_bytes
from kt_launch.resolve.methods import KT_METHOD_FOR_SFT

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


def default_mem_fraction(gpu_mem_mib: float, tp: int, chunk: int, cuda_graph_max_bs: int, pp: int = 1,
                         max_prefill_tokens: int = 16384) -> float:
    """SGLang's mem_fraction_static when unset (server_args.py:1372-1415; no DP attention, piecewise CUDA graph
    or speculative decoding, which kt-launch does not plan)."""
    reserved = 512.0
    reserved += max(chunk if chunk > 0 else max_prefill_tokens, 2048) * 1.5
    reserved += cuda_graph_max_bs * 2
    reserved += tp * pp / 8 * 1024
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)


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


def kv_bytes_per_token(model, tp: int, elem: int = 2) -> int:
    """Bytes of KV cache one token takes on one GPU of the TP group (0 when config.json lacks the shape)."""
    if model.attention == "mla":
        return (model.kv_lora_rank + model.qk_rope_head_dim) * model.num_layers * elem
    if model.attention == "gqa" and model.num_kv_heads:
        return max(1, model.num_kv_heads // tp) * (model.head_dim + model.v_head_dim) * model.num_layers * elem
    return 0


def nonexpert_share(w: WeightBytes, model, tp: int) -> int:
    """Non-expert bytes one TP rank holds."""
    kv = w.kv_proj_bytes
    if kv and model.num_kv_heads:
        kv = math.ceil(kv * max(1, model.num_kv_heads // tp) / model.num_kv_heads)
    else:
        kv = math.ceil(kv / tp)
    return w.replicated_bytes + math.ceil(w.sharded_bytes / tp) + kv


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


def cpu_expert_bytes(method: str, hidden: int, inter: int) -> tuple[int, str] | None:
    """Bytes of one expert (gate, up, down) in kt-kernel's CPU format, and how that was counted.

    AMXINT4/AMXINT8: packed weights plus one f32 scale per output row (kt-kernel operators/amx/la/amx_buffers.hpp
    BufferB `required_size`: n*k*bits/8 + 4*n; the converter writes the same `.scale` rows). BF16: 2 B/param.
    FP8: 1 B/param plus f32 128x128 block scales (`weight_scale_inv`); FP8_PERCHANNEL: f32 per row. RAWINT4
    (compressed-tensors, group 32, bf16 scales): 0.5 + 2/32 B/param. GPTQ_INT4 (group 128, fp16 scales and packed
    zeros): 0.5 + (2 + 0.5)/128. MXFP4: 0.5 + 1/32. NVFP4: 0.5 + 1/16. MXFP8: 1 + 1/32. LLAMAFILE: Q4_K, 4.5 bits."""
    p = 3 * hidden * inter
    rows = 2 * inter + hidden
    blocks = 2 * math.ceil(inter / 128) * math.ceil(hidden / 128) + math.ceil(hidden / 128) * math.ceil(inter / 128)
    m = method.upper()
    table = {
        "AMXINT4": p // 2 + 4 * rows, "AMXINT4_SFT": p // 2 + 4 * rows,
        "AMXINT8": p + 4 * rows, "AMXINT8_SFT": p + 4 * rows,
        "BF16": 2 * p, "AMXBF16": 2 * p, "AMXBF16_SFT": 2 * p,
        "FP8": p + 4 * blocks, "FP8_PERCHANNEL": p + 4 * rows,
        "RAWINT4": p // 2 + 2 * p // 32, "GPTQ_INT4": p // 2 + math.ceil(2.5 * p / 128),
        "MXFP4": p // 2 + p // 32, "NVFP4": p // 2 + p // 16, "MXFP8": p + p // 32,
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
    gpus: tuple[GpuFacts, ...]  # the TP group
    tp: int
    mem_fraction: float | None  # the user's, or None: SGLang's default per GPU size
    chunk_user: int | None
    kv_elem: int
    kv_target: int
    kv_target_key: str
    max_total_tokens: int | None
    layerwise: bool
    pools: int
    numa_nodes: tuple[int, ...]
    cpu_method: str
    cpu_experts: tuple[int, str] | None  # (bytes, source) from headers
    ram_total: int
    ram_available: int
    node_memory: dict[int, int]


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
    pools_r = values.get("kt.threadpool_count")
    pools = (pools_r.value if pools_r is not None and pools_r.value else None) or 1
    numa_r = values.get("kt.numa_nodes")
    numa = tuple(numa_r.value) if numa_r is not None and numa_r.value else \
        tuple(n.id for n in inp.host.cpu_numa_nodes)[:pools]
    if cfg.moe_lora is not None:
        sft = values.get("moe_lora.sft_method")
        method = KT_METHOD_FOR_SFT.get(sft.value if sft is not None else "", "AMXBF16")
    else:
        r = values.get("kt.method")
        method = (r.value if r is not None else None) or "AMXINT4"
    return Setup(
        model=m, weights=inp.weights, gpus=tuple(inp.host.gpus[:tp]), tp=tp,
        mem_fraction=cfg.server.mem_fraction_static, chunk_user=cfg.server.chunked_prefill_size,
        kv_elem=kv_element_bytes(m, cfg.server.extra_args), kv_target=int(kv_target), kv_target_key=key,
        max_total_tokens=mtt, layerwise=bool(cfg.kt.gpu_prefill_token_threshold),
        pools=pools, numa_nodes=numa, cpu_method=method, cpu_experts=_cpu_expert_source(inp, values),
        ram_total=inp.host.memory_total_bytes, ram_available=inp.host.memory_available_bytes,
        node_memory={n.id: n.memory_bytes for n in inp.host.numa})


def _cpu_expert_source(inp: ResolveInput, values: dict[str, Resolved]) -> tuple[int, str] | None:
    """CPU expert bytes from headers: kt.weight_path's (AMX or HF tensors, GGUF size) or model.path's routed
    experts (layers SGLang loads only) when kt-kernel reads the HF checkpoint."""
    try:
        got = read_expert_bytes(inp, values)
    except (KeyError, AttributeError):
        return None
    if got is None:
        return None
    n, src = got
    if src == "model.path" and inp.weights is not None:
        return inp.weights.expert_bytes, "model.path headers"
    return n, f"{src} headers"


def memory_plan(inp: ResolveInput, values: dict[str, Resolved]) -> MemoryPlan | None:
    """The plan for the resolved values (kt.num_gpu_experts, kt.gpu_experts_ratio): the fleet's entry point."""
    s = setup_from(inp, values)
    if s is None:
        return None
    n = values.get("kt.num_gpu_experts")
    ratio = values.get("kt.gpu_experts_ratio")
    return plan(s, n.value if n is not None and n.value else 0, ratio.value if ratio is not None else None)


def _gpu_fixed(s: Setup, g: GpuFacts, rank: int) -> tuple[float, int, int, int, int]:
    """(mem_fraction, reserve, non-expert share, kt buffers, chunk) of one GPU before experts and KV."""
    total = g.memory_bytes
    smallest = min((x.memory_bytes for x in s.gpus), default=total) / MiB or None
    chunk_default, graph_bs = sglang_gpu_defaults(smallest, s.tp)
    chunk = s.chunk_user if s.chunk_user is not None else chunk_default
    mf = s.mem_fraction if s.mem_fraction is not None else default_mem_fraction(smallest, s.tp, chunk, graph_bs)
    usable = max(0, total - CUDA_CONTEXT_BYTES)
    reserve = total - int(usable * mf)
    m, w = s.model, s.weights
    nonexp = nonexpert_share(w, m, s.tp) if w is not None else 0
    buf = (max(chunk, 0) or 8192) * m.hidden_size * 2 if rank == 0 else 0
    if s.layerwise and w is not None:
        buf += math.ceil(expert_avg_bytes(w, m) * m.num_experts / s.tp)
    return mf, reserve, nonexp, buf, chunk


def per_count_bytes(s: Setup) -> int:
    """GPU bytes one more expert per MoE layer costs on each rank."""
    if s.weights is None:
        return 0
    layers = s.model.kt_moe_layers or len(s.model.moe_layers)
    return math.ceil(expert_avg_bytes(s.weights, s.model) * layers / s.tp)


def room_for_experts(s: Setup, kv_tokens: int) -> list[tuple[GpuFacts, int]]:
    """Per GPU: bytes left for GPU experts once reserve, non-expert weights, kt buffers and `kv_tokens` are placed."""
    bpt = kv_bytes_per_token(s.model, s.tp, s.kv_elem)
    out = []
    for rank, g in enumerate(s.gpus):
        _, reserve, nonexp, buf, _ = _gpu_fixed(s, g, rank)
        out.append((g, g.memory_bytes - reserve - nonexp - buf - kv_tokens * bpt))
    return out


def fit(s: Setup, kv_tokens: int | None = None) -> Fit:
    """The largest per-layer count that leaves `kv_tokens` (default: the KV target) on every GPU of the group.
    max_gpu_experts is -1 when not even 0 experts leave that room."""
    kv = s.kv_target if kv_tokens is None else kv_tokens
    if not s.gpus:
        return Fit(0, kv, "no GPU facts")
    if s.weights is None:
        return Fit(0, kv, "no checkpoint headers")
    cost = per_count_bytes(s)
    best, by = None, ""
    for g, room in room_for_experts(s, kv):
        n = -1 if room < 0 else (s.model.num_experts if cost == 0 else room // cost)
        if best is None or n < best:
            best, by = n, f"gpu {g.index}"
    if best >= s.model.num_experts:
        return Fit(s.model.num_experts, kv, "experts per layer", cost)
    return Fit(best, kv, by, cost)


def plan(s: Setup, num_gpu_experts: int, ratio: float | None = None) -> MemoryPlan:
    m, w = s.model, s.weights
    total_experts = gpu_experts_total(m, num_gpu_experts, ratio)
    avg = expert_avg_bytes(w, m) if w is not None else 0.0
    exp_rank = math.ceil(total_experts * avg / s.tp)
    bpt = kv_bytes_per_token(m, s.tp, s.kv_elem)
    gpus: list[GpuMemory] = []
    mf, chunk = s.mem_fraction or 0.0, s.chunk_user or 0
    for rank, g in enumerate(s.gpus if w is not None else ()):
        mf, reserve, nonexp, buf, chunk = _gpu_fixed(s, g, rank)
        room = g.memory_bytes - reserve - nonexp - buf - exp_rank
        kv = s.max_total_tokens if s.max_total_tokens else (max(0, room) // bpt if bpt else 0)
        gpus.append(GpuMemory(g.index, g.name, g.memory_bytes, nonexp + buf, exp_rank, bpt, kv, reserve,
                              room - kv * bpt, nonexp, buf))
    if not gpus and s.gpus:
        smallest = min(x.memory_bytes for x in s.gpus) / MiB
        chunk = s.chunk_user if s.chunk_user is not None else sglang_gpu_defaults(smallest, s.tp)[0]
    elif not s.gpus:
        chunk = s.chunk_user if s.chunk_user is not None else sglang_gpu_defaults(None, s.tp)[0]
    notes = []
    if w is None:
        notes.append("GPU side not sized: the model.path safetensors headers were not read")
    elif not s.gpus:
        notes.append("GPU side not sized: no GPU facts (plan with --host-facts FILE)")
    return MemoryPlan(tuple(gpus), ram_plan(s, chunk), fit(s) if w is not None and s.gpus else None, s.tp,
                      num_gpu_experts, total_experts, mf,
                      "server.mem_fraction_static" if s.mem_fraction is not None else
                      "SGLang's default (_handle_gpu_memory_settings)", chunk, tuple(notes), w)


def ram_plan(s: Setup, chunk: int) -> RamMemory | None:
    m = s.model
    if s.cpu_experts is not None:
        experts, src = s.cpu_experts
    else:
        est = cpu_expert_bytes(s.cpu_method, m.hidden_size, m.moe_intermediate_size)
        if est is None:
            return None
        experts = est[0] * m.num_experts * len(m.moe_layers)
        src = est[1]
    per_pool = kt_pool_buffer_bytes(m, max(chunk, 1), s.pools)
    other = per_pool * s.pools
    nodes = tuple(NodeMemory(node, s.node_memory.get(node, 0), math.ceil(experts / s.pools) + per_pool)
                  for node in s.numa_nodes[:s.pools])
    return RamMemory(s.ram_total, experts, other, experts + other, src, s.ram_available, nodes)


def tp_sizes(n_gpus: int) -> list[int]:
    """TP sizes a host allows: powers of two up to its GPU count (kt's own launcher requires a power of two)."""
    out, t = [], 1
    while t <= n_gpus:
        out.append(t)
        t *= 2
    return out


def fit_rows(inp: ResolveInput, values: dict[str, Resolved], targets=FIT_TARGETS) -> list[dict]:
    """`kt-launch fit`: the largest kt.num_gpu_experts per TP size and KV target, each with a ready --set line."""
    rows = []
    for tp in tp_sizes(len(inp.host.gpus)):
        for kv in targets:
            s = setup_from(inp, values, tp=tp, kv_target=kv)
            if s is None or s.weights is None:
                return []
            f = fit(s)
            fits = f.max_gpu_experts >= 0
            rows.append({"tp_size": tp, "kv_tokens": kv, "max_gpu_experts": f.max_gpu_experts if fits else None,
                         "limited_by": f.limited_by if fits else f"{f.limited_by}: weights + KV do not fit",
                         "per_layer_bytes": f.per_layer_bytes,
                         "set": (f"--set server.tp_size={tp} --set kt.num_gpu_experts={f.max_gpu_experts} "
                                 f"--set server.max_total_tokens={kv}") if fits else "-"})
    return rows
