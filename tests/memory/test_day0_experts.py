"""Routed experts under other names (issue 24 item 1), from sparse checkpoints with each layout's tensor list
(tests/memory/support.py): Qwen3.5's fused 3-D experts, gpt-oss's MXFP4 blocks/scales/biases, Llama-4's
feed_forward.experts, DeepSeek-V4's ffn.experts.E.w1/w2/w3 in FP4 with ue8m0 scales. Their bytes are expert bytes
(kt-kernel's, on the CPU), not GPU non-expert weights; the per-layer expert counts are whole."""

import re

import pytest

from kt_launch.core.fileid import tensor_nbytes
from kt_launch.facts.artifacts import _Cache, model_dir_facts
from kt_launch.facts.model import read_model_facts
from kt_launch.facts.weights import weight_bytes
from memory.support import tensors

ROUTED = re.compile(r"(?:^|\.)(?:layers\.\d+\.(?:mlp|feed_forward|ffn)\.experts\.)")


def counted(name: str) -> tuple[int, int, int]:
    """(routed experts, non-experts, MTP) from the tensor list the shards were written from, by name."""
    exp = non = mtp = 0
    for t, (dtype, shape) in tensors(name).items():
        n = tensor_nbytes(dtype, shape)
        if t.startswith("mtp."):
            mtp += n
        elif ROUTED.search(t):
            exp += n
        else:
            non += n
    return exp, non, mtp


# (model, MoE layers, experts per layer, published checkpoint GB of the tensors built: a sanity bound)
CASES = [("Qwen3.5-35B-A3B", 40, 256, (65, 72)), ("gpt-oss-120b", 36, 128, (60, 66)),
         ("Llama-4-Scout", 48, 16, (210, 225)), ("Llama-4-Maverick", 24, 128, (780, 810)), ("DeepSeek-V4-Flash", 43, 256, (140, 175))]


@pytest.mark.parametrize("name,layers,experts,gb", CASES, ids=[c[0] for c in CASES])
def test_experts_under_other_names_are_expert_bytes(models, name, layers, experts, gb):
    path = models(name)
    m = read_model_facts(str(path))
    md = model_dir_facts(str(path), _Cache())
    w = weight_bytes(md, m)
    exp, non, mtp = counted(name)
    assert len(m.moe_layers) == layers and m.num_experts == experts
    assert abs(w.expert_bytes - exp) <= 0.10 * exp and abs(w.nonexpert_bytes - non) <= 0.10 * non
    assert (w.expert_bytes, w.nonexpert_bytes, w.skipped_bytes) == (exp, non, mtp)
    assert sorted(w.expert_by_layer) == list(m.moe_layers)
    # every MoE layer holds all its experts (preflight's completeness check), and the dir has expert weights
    assert md.experts.present and all(md.experts.layers.get(i) == experts for i in m.moe_layers)
    assert gb[0] <= (exp + non + mtp) / 1e9 <= gb[1]


def test_maverick_gpu_experts_only_on_its_24_moe_layers(models, profile, capsys):
    """sglang-kt counts 48 MoE layers for Maverick (kt_ep_wrapper.py:4546-4574 reads only first_k_dense_replace and
    moe_layer_freq) and spreads n x 48 GPU experts over them; only the 24 real MoE layers hold weights."""
    from memory.support import dry_json
    model = models("Llama-4-Maverick")
    p = profile(model, kt={"method": "AMXINT4", "weight_path": "/nonexistent/mav-int4", "num_gpu_experts": 2},
                server={"tp_size": 8})
    rc, doc = dry_json(capsys, p, "rtx4090_8x")
    mem = doc["memory"]
    one = 3 * 5120 * 8192 * 2  # one BF16 expert
    assert mem["gpu_experts_total"] == 2 * 48
    assert abs(mem["gpus"][0]["gpu_experts_bytes"] - 2 * 24 * one / 8) <= 8
    # CPU experts: 24 layers x 128 experts in AMXINT4, not 48 (the 1,440 GiB of BF16 became 720)
    assert doc["memory"]["checkpoint"]["expert_bytes"] == 24 * 128 * one


def test_gpt_oss_plan_sizes_the_swa_pool(models, profile, capsys):
    """gpt-oss-120b's 18 sliding-window layers hold 0.8 x the full layers' tokens in SGLang's hybrid SWA pool
    (model_runner_kv_cache_mixin.py:410-470): 2,048 B per layer and token at TP 1 (8 KV heads of 64, K and V, BF16)
    x (18 + 0.8 x 18); --swa-full-tokens-ratio and --disable-hybrid-swa-memory change it as they change SGLang's."""
    from memory.support import dry_json
    model = models("gpt-oss-120b")
    kt = {"method": "MXFP4", "weight_path": str(model), "num_gpu_experts": 0}
    for extra, bpt, ratio in (([], 66356, "0.8"), (["--swa-full-tokens-ratio", "0.5"], 55296, "0.5"),
                              (["--disable-hybrid-swa-memory"], 73728, "1")):
        rc, doc = dry_json(capsys, profile(model, kt=kt, server={"extra_args": extra}), "h200_1x")
        g = doc["memory"]["gpus"][0]
        assert g["kv_bytes_per_token"] == bpt, extra
        assert g["kv_tokens"] * bpt <= g["total_bytes"]
        assert any(n.startswith(f"sliding-window KV: 18 of 36 layers keep swa_full_tokens_ratio {ratio} ")
                   for n in doc["memory"]["notes"]), doc["memory"]["notes"]
