"""Flavour catalogue: which SGLang flags each flavour accepts, and how MoE-LoRA is expressed.

The plan speaks profile vocabulary ("kt.cpuinfer"); this maps it onto flags. Anything a flavour
cannot express becomes an error finding, never a dropped value.
Facts: shared/reference/sglang-flavours.md §1.2-1.3 and the seed log (kt-moe-lora fork).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_FLAGS = frozenset({
    "--model-path", "--served-model-name", "--host", "--port", "--tp-size", "--lora-paths",
    "--chunked-prefill-size", "--max-running-requests", "--mem-fraction-static", "--api-key",
    "--disable-cuda-graph", "--disable-shared-experts-fusion",
    "--kt-weight-path", "--kt-method", "--kt-cpuinfer", "--kt-threadpool-count", "--kt-num-gpu-experts",
    "--kt-max-deferred-experts-per-token",
})

# profile key -> flag. Order here is the order in the command line.
KEY_FLAGS: tuple[tuple[str, str], ...] = (
    ("model.path", "--model-path"),
    ("model.served_name", "--served-model-name"),
    ("server.host", "--host"),
    ("server.port", "--port"),
    ("server.tp_size", "--tp-size"),
    ("kt.weight_path", "--kt-weight-path"),
    ("kt.method", "--kt-method"),
    ("kt.cpuinfer", "--kt-cpuinfer"),
    ("kt.threadpool_count", "--kt-threadpool-count"),
    ("kt.numa_nodes", "--kt-numa-nodes"),
    ("kt.num_gpu_experts", "--kt-num-gpu-experts"),
    ("kt.gpu_experts_ratio", "--kt-gpu-experts-ratio"),
    ("kt.max_deferred_experts_per_token", "--kt-max-deferred-experts-per-token"),
    ("kt.gpu_prefill_token_threshold", "--kt-gpu-prefill-token-threshold"),
    ("kt.enable_dynamic_expert_update", "--kt-enable-dynamic-expert-update"),
    ("moe_lora.path", "--kt-moe-lora-path"),
    ("moe_lora.rank", "--kt-moe-lora-rank"),
    ("moe_lora.alpha", "--kt-moe-lora-alpha"),
    ("moe_lora.sft_method", "--kt-moe-sft-method"),
    ("lora.paths", "--lora-paths"),
    ("server.disable_cuda_graph", "--disable-cuda-graph"),
    ("server.chunked_prefill_size", "--chunked-prefill-size"),
    ("server.max_running_requests", "--max-running-requests"),
    ("server.mem_fraction_static", "--mem-fraction-static"),
    ("server.api_key", "--api-key"),
    ("server.lora_backend", "--lora-backend"),
    ("server.disable_custom_all_reduce", "--disable-custom-all-reduce"),
)


@dataclass(frozen=True)
class Flavor:
    name: str
    description: str
    flags: frozenset[str]
    moe_lora: str | None  # "moe-lora-flags" (seed fork) | "expert-lora-path" (sglang-kt) | None
    needs_shared_experts_fusion_off: bool = False  # upstream does not turn it off for kt by itself

    def has(self, flag: str) -> bool:
        return flag in self.flags


CATALOGUE: dict[str, Flavor] = {
    "sglang": Flavor("sglang", "upstream sglang 0.5.x: six kt flags",
                     BASE_FLAGS | {"--disable-decode-cuda-graph", "--disable-prefill-cuda-graph", "--lora-backend",
                                   "--disable-custom-all-reduce", "--pp-size"}, None,
                     needs_shared_experts_fusion_off=True),
    "sglang-kt": Flavor("sglang-kt", "KTransformers fork sglang-kt 0.7.x", BASE_FLAGS | {
        "--kt-numa-nodes", "--kt-gpu-experts-ratio", "--kt-gpu-prefill-token-threshold",
        "--kt-enable-dynamic-expert-update", "--kt-expert-lora-path", "--lora-backend",
        "--disable-custom-all-reduce", "--pp-size"}, "expert-lora-path"),
    "kt-moe-lora": Flavor("kt-moe-lora", "the MoE-LoRA fork of the seed log", BASE_FLAGS | {
        "--kt-moe-lora-path", "--kt-moe-lora-rank", "--kt-moe-lora-alpha", "--kt-moe-sft-method"}, "moe-lora-flags"),
}


def flavor_named(name: str, accepted: frozenset[str] | None = None) -> Flavor:
    """The catalogue entry; with `accepted` (the installed parser's flags) capabilities come from the real parser."""
    base = CATALOGUE[name]
    if accepted is None:
        return base
    return Flavor(base.name, f"{base.description}, as installed", frozenset(accepted), base.moe_lora,
                  base.needs_shared_experts_fusion_off)

