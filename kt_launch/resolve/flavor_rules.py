"""Rules that depend on the SGLang flavour: what one flavour takes and another refuses, ignores or checks late.

sglang-kt's expert-LoRA mode validates much of this only in `check_server_args` or at model
construction; these rules say it before launch. Codes KT-E31x / KT-W31x.
"""

from __future__ import annotations

from typing import Iterable

from kt_launch.resolve.steps import step
from kt_launch.core.findings import Finding, error, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.profile import lora_entries
from kt_launch.core.sglang_argv import config_words
from kt_launch.resolve.verdicts import wrapper_call_incompatible
from kt_launch.core.plan import Resolved


def passthrough_value(args: Iterable[str], *flags: str) -> str | None:
    """The value given to any of `flags` in pass-through args (`--f v` or `--f=v`); last one wins."""
    args = list(args)
    found = None
    for i, a in enumerate(args):
        name, eq, val = a.partition("=")
        if name in flags:
            found = val if eq else (args[i + 1] if i + 1 < len(args) else "")
    return found


def _extra(inp: ResolveInput) -> list[str]:
    """SGLang's arguments beyond the plan, in the order SGLang reads them: its --config file's keys first (as its
    ConfigArgumentMerger puts them), then server.extra_args and the words after `--`."""
    cfg = inp.sglang_config
    merger = inp.sglang.config_merger if inp.sglang is not None else None
    from_file = ([w.text for w in config_words(cfg.entries, merger, cfg.path)]
                 if cfg is not None and cfg.read and not cfg.problem else [])
    return [*from_file, *inp.config.server.extra_args, *inp.passthrough]


def _expert_lora_mode(inp: ResolveInput, values: dict[str, Resolved]) -> bool:
    return values["runtime.flavor"].value == "sglang-kt" and inp.config.moe_lora is not None


@step(fills=("server.lora_backend", "server.disable_custom_all_reduce"), reads=("runtime.flavor",))
def resolve_flavor_lora(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """sglang-kt expert-LoRA mode needs the triton LoRA backend and no custom all-reduce."""
    if not _expert_lora_mode(inp, values):
        return
    values["server.lora_backend"] = Resolved("triton", "derived", "sglang-kt expert LoRA runs with the triton LoRA backend")
    values["server.disable_custom_all_reduce"] = Resolved(True, "derived", "sglang-kt expert LoRA disables custom all-reduce")


def sglang_kt_expert_lora(inp: ResolveInput, values: dict[str, Resolved]) -> Iterable[Finding]:
    if not _expert_lora_mode(inp, values):
        return
    kt, server = inp.config.kt, inp.config.server
    if lora_entries(inp.config):
        yield error("KT-E311", "sglang-kt takes the expert LoRA either as moe_lora.path (--kt-expert-lora-path) or as "
                    "one merged adapter in lora.paths, not both", "remove lora.paths, or drop moe_lora and pass the "
                    "merged adapter as the only lora.paths entry")
    mrr = server.max_running_requests
    extra_mrr = passthrough_value(_extra(inp), "--max-running-requests")
    if (mrr is not None and mrr < 2) or (extra_mrr is not None and extra_mrr.strip() in ("0", "1")):
        yield error("KT-E312", "server.max_running_requests must be unset or at least 2 with sglang-kt expert LoRA",
                    "set server.max_running_requests to 2 or more")
    if kt.gpu_prefill_token_threshold:
        yield error("KT-E313", "kt.gpu_prefill_token_threshold is set; sglang-kt expert LoRA refuses the full-GPU "
                    "prefill fallback", "remove kt.gpu_prefill_token_threshold")
    if kt.enable_dynamic_expert_update:
        yield error("KT-E314", "kt.enable_dynamic_expert_update is on; sglang-kt expert LoRA refuses it",
                    "set kt.enable_dynamic_expert_update: false")
    pp = passthrough_value(_extra(inp), "--pp-size", "--pipeline-parallel-size")
    if pp is not None and pp.strip() != "1":
        yield error("KT-E315", f"--pp-size {pp}: sglang-kt expert LoRA needs pipeline parallel size 1",
                    "remove --pp-size")
    spec = passthrough_value(_extra(inp), "--speculative-algorithm")
    if spec is not None and spec.strip().upper() not in ("", "NGRAM"):
        yield error("KT-E316", f"--speculative-algorithm {spec}: with LoRA sglang-kt allows only NGRAM",
                    "use --speculative-algorithm NGRAM or none")


def upstream_rules(inp: ResolveInput, values: dict[str, Resolved]) -> Iterable[Finding]:
    if values["runtime.flavor"].value != "sglang":
        return
    facts = inp.sglang
    verdict = wrapper_call_incompatible(facts) if facts is not None else None
    if verdict is not None:
        yield verdict
    if inp.config.kt.numa_nodes:
        yield warning("KT-W311", "kt.numa_nodes is set but upstream sglang has no --kt-numa-nodes; pool i runs on "
                      "NUMA node i", "use runtime.flavor: sglang-kt to bind pools to nodes")


RULES = (sglang_kt_expert_lora, upstream_rules)
