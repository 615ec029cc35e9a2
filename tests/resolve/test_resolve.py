"""Each resolution rule, on literal host facts and profiles (no file system)."""

import copy
from pathlib import Path

import pytest

from kt_launch.facts.adapters import AdapterConfig
from kt_launch.facts.host import host_from_json
from kt_launch.facts.model import shape_from_config
from kt_launch.core.tuning import TunedThreads
from kt_launch.resolve.threads import core_reserve, untuned_cpuinfer

from core.support import TWO_SOCKET, XEON16, codes, plan_for

DATA = Path(__file__).resolve().parents[1] / "data"

SEED = """
model: {path: /models/DeepSeek-V2-Lite-Chat}
kt: {weight_path: /models/DeepSeek-V2-Lite-Chat-CPU-weight-INT8}
moe_lora: {path: /lora/moe_lora.pt, rank: 8, alpha: 16.0, sft_method: AMXBF16_SFT}
lora: {paths: [/lora/checkpoint-133]}
runtime: {flavor: kt-moe-lora}
"""
PLAIN = "model: {path: /m}\nkt: {weight_path: /w, method: AMXINT8}\n"
V2_LITE = shape_from_config(dict(model_type="deepseek_v2", hidden_size=2048, moe_intermediate_size=1408,
                                 n_routed_experts=64, num_experts_per_tok=6, num_hidden_layers=27,
                                 first_k_dense_replace=1))


# --- seed bug 1: num_gpu_experts None in MoE-LoRA mode ----------------------------------------
def test_seed_bug1_num_gpu_experts_is_zero_in_moe_lora_mode(write_profile):
    plan = plan_for(write_profile(SEED))
    r = plan.values["kt.num_gpu_experts"]
    assert (r.value, r.source) == (0, "derived")


def test_positive_gpu_experts_in_moe_lora_mode_is_an_error(write_profile):
    plan = plan_for(write_profile(SEED), sets=["kt.num_gpu_experts=4"])
    assert "KT-E101" in codes(plan) and not plan.ok


def test_gpu_experts_ratio_in_moe_lora_mode_is_an_error(write_profile):
    assert "KT-E102" in codes(plan_for(write_profile(SEED), sets=["kt.gpu_experts_ratio=0.1"]))


def test_num_gpu_experts_above_experts_per_layer(write_profile):
    plan = plan_for(write_profile(PLAIN), sets=["kt.num_gpu_experts=65"], model=V2_LITE)
    assert "KT-E103" in codes(plan)
    assert plan_for(write_profile(PLAIN), sets=["kt.num_gpu_experts=64"], model=V2_LITE).ok


def test_num_gpu_experts_always_resolved_for_plain_inference(write_profile):
    r = plan_for(write_profile(PLAIN)).values["kt.num_gpu_experts"]
    assert r.value == 0 and r.source == "default"


# --- seed bug 2: cpuinfer None ----------------------------------------------------------------
def test_seed_bug2_cpuinfer_from_host_physical_cores(write_profile):
    r = plan_for(write_profile(SEED)).values["kt.cpuinfer"]
    assert r.source == "host" and r.value == 14  # 16 physical cores (not 32 logical) minus 2 reserved
    assert "16 usable physical cores" in r.reason


@pytest.mark.parametrize("cores,reserve", [(1, 0), (2, 0), (3, 1), (7, 1), (8, 2), (16, 2), (128, 2)])
def test_core_reserve(cores, reserve):
    assert core_reserve(cores) == reserve


def test_cpuinfer_never_above_usable_cores_and_at_least_pools():
    for cores in range(1, 70):
        h = copy.deepcopy(XEON16)
        h["cpu"].update(physical_cores=cores, logical_cpus=cores, usable_cpus=list(range(cores)))
        h["numa"] = [{"id": 0, "cpus": list(range(cores))}]  # a host file must be a machine that can exist
        host = host_from_json(h)
        v = untuned_cpuinfer(host, 1)
        assert 1 <= v <= cores


def test_affinity_mask_limits_cores(write_profile):
    h = copy.deepcopy(XEON16)
    h["cpu"]["usable_cpus"] = list(range(8))  # taskset 0-7 on a 16-core/32-thread box -> 4 physical cores
    r = plan_for(write_profile(PLAIN), host=h).values["kt.cpuinfer"]
    assert r.value == 3


def test_user_cpuinfer_above_cores_kept_with_warning(write_profile):
    plan = plan_for(write_profile(PLAIN), sets=["kt.cpuinfer=60"])
    assert plan.values["kt.cpuinfer"].value == 60 and plan.values["kt.cpuinfer"].source == "cli"
    assert "KT-W101" in codes(plan) and plan.ok


def test_tuned_value_used_and_cli_still_wins(write_profile):
    tuned = TunedThreads(13, "tuned on this host")
    assert plan_for(write_profile(PLAIN), tuned=tuned).values["kt.cpuinfer"].source == "tuned"
    assert plan_for(write_profile(PLAIN), tuned=tuned).values["kt.cpuinfer"].value == 13
    r = plan_for(write_profile(PLAIN), tuned=tuned, sets=["kt.cpuinfer=9"]).values["kt.cpuinfer"]
    assert (r.value, r.source) == (9, "cli")


# --- thread pools and NUMA ----------------------------------------------------------------------
def test_threadpools_from_numa_nodes_with_cpus(write_profile):
    plan = plan_for(write_profile(PLAIN), host=TWO_SOCKET)
    assert plan.values["kt.threadpool_count"].value == 2  # node 2 is memory-only
    assert plan.values["kt.numa_nodes"].value == [0, 1]
    assert plan.values["kt.cpuinfer"].value == 62


def test_numa_nodes_must_exist_and_match_pools(write_profile):
    assert "KT-E104" in codes(plan_for(write_profile(PLAIN), host=TWO_SOCKET, sets=["kt.numa_nodes=[0, 2]"]))
    assert "KT-E105" in codes(plan_for(write_profile(PLAIN), host=TWO_SOCKET,
                                       sets=["kt.numa_nodes=[0]", "kt.threadpool_count=2"]))


def test_cpuinfer_below_pools_is_an_error(write_profile):
    assert "KT-E106" in codes(plan_for(write_profile(PLAIN), sets=["kt.cpuinfer=1", "kt.threadpool_count=2"]))


def test_uneven_split_warns(write_profile):
    assert "KT-W102" in codes(plan_for(write_profile(PLAIN), host=TWO_SOCKET, sets=["kt.cpuinfer=61"]))


# --- seed bug 3: base weights by SFT method ---------------------------------------------------
def test_seed_bug3_bf16_sft_reads_model_path_and_warns_unused_weight_path(write_profile):
    plan = plan_for(write_profile(SEED))
    assert plan.values["moe_lora.base_weights"].value == "/models/DeepSeek-V2-Lite-Chat"
    assert "KT-W111" in codes(plan)


@pytest.mark.parametrize("sft", ["AMXINT8_SFT", "AMXINT4_SFT"])
def test_seed_bug3_int_sft_reads_kt_weight_path(write_profile, sft):
    plan = plan_for(write_profile(SEED), sets=[f"moe_lora.sft_method={sft}"])
    assert plan.values["moe_lora.base_weights"].value == "/models/DeepSeek-V2-Lite-Chat-CPU-weight-INT8"
    assert "KT-W111" not in codes(plan)
    plan = plan_for(write_profile(SEED), sets=[f"moe_lora.sft_method={sft}", "kt.weight_path=null"])
    assert "KT-E113" in codes(plan)


def test_bf16_sft_without_weight_path_derives_it(write_profile):
    plan = plan_for(write_profile(SEED), sets=["kt.weight_path=null"])
    r = plan.values["kt.weight_path"]
    assert (r.value, r.source) == ("/models/DeepSeek-V2-Lite-Chat", "derived") and plan.ok


def test_method_must_match_sft_method(write_profile):
    assert "KT-E110" in codes(plan_for(write_profile(SEED), sets=["kt.method=AMXINT4"]))
    assert "KT-E110" not in codes(plan_for(write_profile(SEED), sets=["kt.method=bf16"]))


# --- seed bug 6: CUDA graphs ------------------------------------------------------------------
def test_seed_bug6_cuda_graph_off_in_moe_lora_mode(write_profile):
    plan = plan_for(write_profile(SEED))
    assert plan.values["server.disable_cuda_graph"].value is True and "KT-W121" in codes(plan)
    assert "KT-E123" in codes(plan_for(write_profile(SEED), sets=["server.disable_cuda_graph=false"]))
    assert "server.disable_cuda_graph" not in plan_for(write_profile(PLAIN)).values


# --- rank / alpha from adapter_config.json ----------------------------------------------------
def _adapter(r, alpha):
    return AdapterConfig("/lora/checkpoint-133/adapter_config.json", "LORA", r, alpha, ("q_proj",))


def test_rank_alpha_read_from_adapter_config(write_profile):
    text = SEED.replace("rank: 8, alpha: 16.0, ", "")
    plan = plan_for(write_profile(text), adapters={"/lora/checkpoint-133": _adapter(8, 16.0)})
    assert plan.values["moe_lora.rank"].value == 8 and plan.values["moe_lora.rank"].source == "derived"
    assert plan.values["moe_lora.alpha"].value == 16.0
    assert "adapter_config.json" in plan.values["moe_lora.alpha"].reason


def test_rank_conflict_and_unknown(write_profile):
    plan = plan_for(write_profile(SEED), adapters={"/lora/checkpoint-133": _adapter(16, 16.0)})
    assert "KT-E121" in codes(plan)
    unknown = write_profile(SEED.replace("rank: 8, alpha: 16.0, ", ""))
    assert "KT-E122" in codes(plan_for(unknown, checks=True))
    assert "KT-E122" in codes(plan_for(unknown, launch_here=True))  # a launch, even under --no-check
    planned = plan_for(unknown)  # --no-check planning: the server's machine reads adapter_config.json
    assert "KT-W122" in codes(planned) and "KT-E122" not in codes(planned)


# --- methods, weights, model, server ------------------------------------------------------------
def test_method_rules(write_profile):
    assert "KT-E111" in codes(plan_for(write_profile(PLAIN), sets=["kt.method=AMXBF16"]))
    assert "KT-E112" in codes(plan_for(write_profile(PLAIN), sets=["kt.method=MOE_INT4"]))
    r = plan_for(write_profile("model: {path: /m}\nkt: {method: bf16}\n")).values["kt.weight_path"]
    assert (r.value, r.source) == ("/m", "derived")
    assert "KT-E114" in codes(plan_for(write_profile("model: {path: /m}\nkt: {method: AMXINT4}\n")))


def test_missing_model_config_is_an_error_only_with_checks(write_profile):
    p = write_profile(PLAIN)
    assert "KT-E108" in codes(plan_for(p, checks=True, model_problem="/m/config.json: not found"))
    assert "KT-I101" in codes(plan_for(p, checks=False))


def test_served_name_and_chunked_prefill(write_profile):
    assert "KT-E107" in codes(plan_for(write_profile(PLAIN), sets=["model.served_name=a:b"]))
    assert "KT-E131" in codes(plan_for(write_profile(PLAIN), sets=["server.chunked_prefill_size=-1"]))


def test_resolve_is_pure(write_profile):
    p = write_profile(SEED)
    a, b = plan_for(p), plan_for(p)
    assert a.values == b.values and a.findings == b.findings


# --- sglang-kt expert LoRA and upstream rules ---------------------------------------------------
KT_LORA = SEED.replace("runtime: {flavor: kt-moe-lora}", "runtime: {flavor: sglang-kt}").replace(
    "lora: {paths: [/lora/checkpoint-133]}\n", "")


def test_sglang_kt_expert_lora_values_and_flags(write_profile):
    from kt_launch.render.argv import render_command

    plan = plan_for(write_profile(KT_LORA))
    assert plan.ok, plan.findings
    argv = render_command(plan).argv
    assert argv[argv.index("--kt-expert-lora-path") + 1] == "/lora/moe_lora.pt"
    assert argv[argv.index("--lora-backend") + 1] == "triton" and "--disable-custom-all-reduce" in argv
    assert argv[argv.index("--kt-method") + 1] == "AMXBF16" and "--kt-moe-lora-path" not in argv


@pytest.mark.parametrize("sets,passthrough,code", [
    (["lora.paths=[\"/a\"]"], (), "KT-E311"),
    (["server.max_running_requests=1"], (), "KT-E312"),
    ([], ("--max-running-requests", "1"), "KT-E312"),
    (["kt.gpu_prefill_token_threshold=400"], (), "KT-E313"),
    (["kt.enable_dynamic_expert_update=true"], (), "KT-E314"),
    ([], ("--pp-size", "2"), "KT-E315"),
    ([], ("--speculative-algorithm=EAGLE",), "KT-E316"),
])
def test_sglang_kt_expert_lora_rules(write_profile, sets, passthrough, code):
    plan = plan_for(write_profile(KT_LORA), sets=sets, passthrough=passthrough)
    assert code in codes(plan)


def test_upstream_refuses_mask_kt_kernel(write_profile):
    """Real parser dump of sglang 0.5.23 beside kt-kernel 0.7.2 (recorded by the contract venvs)."""
    from kt_launch.facts.sglang import load_sglang_facts_file

    facts = load_sglang_facts_file(DATA / "parser_sglang_0.5.23.json")
    plan = plan_for(write_profile(PLAIN), sglang=facts)
    assert plan.flavor == "sglang" and plan.values["runtime.flavor"].source == "host"
    assert "KT-E317" in codes(plan)
    assert "KT-W311" in codes(plan_for(write_profile(PLAIN), sets=["runtime.flavor=sglang", "kt.numa_nodes=[0]"]))


def test_explicit_flavor_checked_against_the_installed_one(write_profile):
    from kt_launch.facts.sglang import load_sglang_facts_file

    facts = load_sglang_facts_file(DATA / "parser_sglang-kt_0.7.2.json")
    plan = plan_for(write_profile(SEED), sglang=facts)  # the seed profile says kt-moe-lora
    assert "KT-E305" in codes(plan)
    plan = plan_for(write_profile(PLAIN), sglang=facts)
    assert plan.flavor == "sglang-kt" and plan.accepted_flags and "--kt-numa-nodes" in plan.accepted_flags


def test_unknown_passthrough_flag_refused_with_real_flags(write_profile):
    from kt_launch.facts.sglang import load_sglang_facts_file
    from kt_launch.render.argv import render_command

    facts = load_sglang_facts_file(DATA / "parser_sglang-kt_0.7.2.json")
    cmd = render_command(plan_for(write_profile(PLAIN), sglang=facts, passthrough=("--log-levle", "debug")))
    assert "KT-E306" in {f.code for f in cmd.findings}
    cmd = render_command(plan_for(write_profile(PLAIN), sglang=facts, passthrough=("--log-level", "debug")))
    assert not cmd.findings


def test_upstream_cuda_graph_uses_the_new_flags(write_profile):
    from kt_launch.facts.sglang import load_sglang_facts_file
    from kt_launch.render.argv import render_command

    facts = load_sglang_facts_file(DATA / "parser_sglang_0.5.23.json")
    argv = render_command(plan_for(write_profile(PLAIN), sglang=facts, sets=["server.disable_cuda_graph=true"])).argv
    assert "--disable-decode-cuda-graph" in argv and "--disable-cuda-graph" not in argv
    assert "--disable-shared-experts-fusion" in argv


@pytest.mark.parametrize("key,value", [("n_routed_experts", 10**12), ("num_hidden_layers", 0),
                                       ("hidden_size", -5), ("num_experts_per_tok", True)])
def test_damaged_config_json_values_are_refused(key, value):
    from kt_launch.facts.model import ModelConfigError

    cfg = dict(model_type="deepseek_v2", hidden_size=2048, moe_intermediate_size=1408, n_routed_experts=64,
               num_experts_per_tok=6, num_hidden_layers=27, first_k_dense_replace=1)
    cfg[key] = value
    with pytest.raises(ModelConfigError, match=key):
        shape_from_config(cfg, "x/config.json")
