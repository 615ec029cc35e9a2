"""Day-0 models (issue 24): real config.json files (tests/data/model_configs, SOURCES.md) read with the right MoE shape,
and an architecture kt-launch does not know named as such, with what sglang-kt 0.7.2's model list says of it."""

import json
import math
from pathlib import Path

import pytest

from kt_launch.core.archs import ARCHS, SGLANG_KT_MOE_MODELS, sglang_kt_model_file
from kt_launch.facts.model import ModelConfigError, shape_from_config
from memory.support import codes, dry_json

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "model_configs"


def real(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


# (config, experts, top-k, expert width, MoE layers) counted by hand from each config and its sglang-kt model file
SHAPES = [
    # ernie4.py:176-186: 1 <= i <= 27, interval 1 -> layers 1..27 (layer 0 dense)
    ("baidu--ERNIE-4.5-21B-A3B-PT", 64, 6, 1536, list(range(1, 28))),
    # hunyuan.py: every layer MoE; moe_topk / moe_intermediate_size one entry per layer
    ("tencent--Hunyuan-A13B-Instruct", 64, 8, 3072, list(range(32))),
    # llama4.py:425-428: (i + 1) % 2 == 0 -> the 24 odd layers, not 48
    ("meta-llama--Llama-4-Maverick-17B-128E-Instruct", 128, 1, 8192, list(range(1, 48, 2))),
    ("meta-llama--Llama-4-Scout-17B-16E-Instruct", 16, 1, 8192, list(range(48))),
    ("Qwen--Qwen3-Next-80B-A3B-Thinking", 512, 10, 512, list(range(48))),
    ("Qwen--Qwen3.5-35B-A3B", 256, 8, 512, list(range(40))),
    ("Qwen--Qwen3.5-397B-A17B", 512, 10, 1024, list(range(60))),
    ("deepseek-ai--DeepSeek-V4-Flash", 256, 6, 2048, list(range(43))),  # hash layers 0-2 have routed experts too
    ("openai--gpt-oss-120b", 128, 4, 2880, list(range(36))),
]


@pytest.mark.parametrize("name,experts,top_k,inter,layers", SHAPES, ids=[s[0] for s in SHAPES])
def test_real_config_moe_shape(name, experts, top_k, inter, layers):
    m = shape_from_config(real(name))
    assert (m.num_experts, m.top_k, m.moe_intermediate_size, list(m.moe_layers)) == (experts, top_k, inter, layers)


def test_maverick_cpu_experts_are_24_layers_not_48():
    """1,440 GiB of CPU experts became 720: the plan's estimate counts experts x MoE layers."""
    m = shape_from_config(real("meta-llama--Llama-4-Maverick-17B-128E-Instruct"))
    bf16 = 2 * 3 * m.hidden_size * m.moe_intermediate_size * m.num_experts * len(m.moe_layers)
    assert round(bf16 / (1 << 30)) == 720


def test_hunyuan_per_layer_lists_must_agree_on_moe_layers():
    cfg = real("tencent--Hunyuan-A13B-Instruct")
    cfg["moe_topk"] = [8] * 31 + [4]
    with pytest.raises(ModelConfigError, match="moe_topk differs between MoE layers"):
        shape_from_config(cfg)
    cfg["moe_topk"] = [8] * 10
    with pytest.raises(ModelConfigError, match="moe_topk has 10 entries"):
        shape_from_config(cfg)


def test_no_real_moe_config_asks_is_this_a_moe_model():
    for p in CONFIGS.glob("*.json"):
        try:
            shape_from_config(json.loads(p.read_text()), p.name)
        except ModelConfigError as e:  # pragma: no cover - the assertion names the file
            pytest.fail(f"{p.name}: {e}")


def test_unknown_architecture_is_named_with_its_keys_and_sglang_kt_verdict():
    cfg = {"architectures": ["Step3p5ForCausalLM"], "model_type": "step3p5", "hidden_size": 4096,
           "num_hidden_layers": 45, "moe_num_routed": 288, "moe_top_k": 8, "share_expert_dim": 1280}
    with pytest.raises(ModelConfigError) as e:
        shape_from_config(cfg, "x/config.json")
    msg = str(e.value)
    assert "Step3p5ForCausalLM: unknown to kt-launch; its config has moe_num_routed, moe_top_k, share_expert_dim" in msg
    assert "sglang/srt/models/step3p5.py:1037" in msg and "is this a MoE model" not in msg
    assert "model.path" not in e.value.fix  # the fix does not send the user to another directory
    cfg["architectures"] = ["MysteryMoeForCausalLM"]
    with pytest.raises(ModelConfigError, match="sglang-kt 0.7.2 has no MoE model of this architecture"):
        shape_from_config(cfg)
    dense = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32}
    with pytest.raises(ModelConfigError, match="LlamaForCausalLM: unknown to kt-launch; its config has no expert"):
        shape_from_config(dense)


def test_unknown_architecture_through_the_cli(tmp_path, profile, capsys):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["Step3p5ForCausalLM"], "hidden_size": 4096,
                                               "num_hidden_layers": 45, "moe_num_routed": 288}))
    rc, doc = dry_json(capsys, profile(d), "rtx4090_8x")
    f = next(f for f in doc["findings"] if f["code"] == "KT-E108")
    assert rc == 3 and "unknown to kt-launch" in f["message"] and "point model.path" not in f["fix"]
    assert "KT-E108" in codes(doc)


def test_every_known_architecture_has_one_row():
    names = [n for a in ARCHS for n in a.names]
    assert len(names) == len(set(names))
    assert sglang_kt_model_file("Ernie4_5_MoeForCausalLM") == "sglang/srt/models/ernie4.py:427"


def _sglang_kt_models_dir():
    import glob
    import os
    root = os.environ.get("KT_LAUNCH_VENVS", "")
    hits = glob.glob(os.path.join(root, "sglang-kt", "lib", "python3*", "site-packages", "sglang", "srt", "models"))
    return Path(hits[0]) if hits else None


def test_sglang_kt_model_list_matches_the_installed_wheel():
    """The recorded list is the wheel's: each file's EntryClass line names those architectures, and every model
    file that builds FusedMoE is listed."""
    import re
    d = _sglang_kt_models_dir()
    if d is None:
        pytest.skip("the sglang-kt 0.7.2 venv (KT_LAUNCH_VENVS/sglang-kt) is not built here")
    listed = {f for f, _, _ in SGLANG_KT_MOE_MODELS}
    for f, line, names in SGLANG_KT_MOE_MODELS:
        text = (d / f).read_text().splitlines()
        assert text[line - 1].startswith("EntryClass"), (f, line)
        tail = "\n".join(text[line - 1:line + 6])
        assert all(n in tail for n in names), (f, names)
    for p in d.glob("*.py"):
        s = p.read_text()
        if re.search(r"^EntryClass\s*=", s, re.M) and re.search(r"\bFusedMoE\b|get_moe_impl_class", s):
            assert p.name in listed, p.name


@pytest.mark.parametrize("name,kv_layers,linear", [("Qwen--Qwen3-Next-80B-A3B-Thinking", 12, 36),
                                                    ("Qwen--Qwen3.5-35B-A3B", 10, 30),
                                                    ("Qwen--Qwen3.5-397B-A17B", 15, 45)])
def test_hybrid_configs_keep_kv_in_full_attention_layers(name, kv_layers, linear):
    """full_attention_interval 4 (configs/qwen3_next.py:255-282), and the real layer_types lists agree."""
    from kt_launch.resolve.memory import kv_bytes_per_token
    cfg = real(name)
    m = shape_from_config(cfg)
    assert (m.kv_layers, m.linear_layers) == (kv_layers, linear)
    types = {**cfg, **cfg.get("text_config", {})}.get("layer_types")
    assert types is None or types.count("full_attention") == kv_layers
    assert kv_bytes_per_token(m, 4) == 512 * kv_layers * 2  # one of 2 KV heads per rank, K and V of 256


def test_deepseek_v4_kv_is_its_compressed_pool():
    """Issue 24 item 5: sglang-kt sizes DeepSeek-V4's pool with DSv4MemoryCalculator (memory_profiler.py:64-101), not
    a per-layer head (88,064 B) nor the generic cell that only seeds it (30,444 B = (448 + 128 + 132) x 43,
    model_runner_kv_cache_mixin.py:57-95). Hand count for V4-Flash (44 compress ratios: 21 x c4, 20 x c128, 3 x 0;
    kv 448 + 2 x 64 + 8 = 584 B, indexer 128 + 4 = 132 B; states 8192 / 4096 / 2048 B at rings 8 / 128 per 128):"""
    from kt_launch.resolve.memory import kv_bytes_per_token, swa_ratio_of
    m = shape_from_config(real("deepseek-ai--DeepSeek-V4-Flash"))
    assert (m.attention, m.qk_nope_head_dim, m.window, len(m.compress_ratios)) == ("compressed", 448, 128, 44)

    def hand(r):
        return (r * 584 * 44 + 584 * 21 / 4 + 584 * 20 / 128 + 132 * 21 / 4
                + r * 8 / 128 * (8192 + 2048) * 21 + r * 4096 * 20)
    assert kv_bytes_per_token(m, 1) == kv_bytes_per_token(m, 8) == round(hand(0.1) + 0.5) == 15956
    # server_args.py:1841-1849: 0.1, raised to fit two chunks when --chunked-prefill-size and --max-total-tokens are set
    assert swa_ratio_of(m) == 0.1 and swa_ratio_of(m, (), 16384, 32000) == 0.9
    assert swa_ratio_of(m, (), 2048, 100000) == 0.1 and swa_ratio_of(m, ("--swa-full-tokens-ratio", "0.5")) == 0.5
    assert kv_bytes_per_token(m, 1, swa_ratio=0.5) == round(hand(0.5) + 0.5)


@pytest.mark.parametrize("name,full,swa", [("openai--gpt-oss-120b", 18, 18),
                                           ("meta-llama--Llama-4-Scout-17B-16E-Instruct", 12, 36),
                                           ("meta-llama--Llama-4-Maverick-17B-128E-Instruct", 12, 36)])
def test_sliding_window_layers_as_sglangs_swa_pool_counts_them(name, full, swa):
    """configs/model_config.py:1494-1513: gpt-oss's layer_types, Llama-4's (i + 1) % 4 != 0 layers are SWA; the pool
    holds swa_full_tokens_ratio (0.8, server_args.py:665) of the full layers' tokens there
    (model_runner_kv_cache_mixin.py:410-470): bytes per token = F x (n_full + 0.8 x n_swa)."""
    from kt_launch.resolve.memory import kv_bytes_per_token, swa_ratio_of
    m = shape_from_config(real(name))
    assert (m.kv_layers, m.swa_layers) == (full, swa)
    per_layer = 8 * 2 * m.head_dim * 2  # 8 KV heads, K and V, BF16
    assert kv_bytes_per_token(m, 1) == round(per_layer * (full + 0.8 * swa) + 0.5)
    assert kv_bytes_per_token(m, 1, swa_ratio=1.0) == per_layer * (full + swa)  # --disable-hybrid-swa-memory
    assert kv_bytes_per_token(m, 8) == round(per_layer / 8 * (full + 0.8 * swa) + 0.5)
    assert swa_ratio_of(m) == 0.8
    text_only = {**real(name), "architectures": ["Llama4ForCausalLM"]} if "Llama" in name else None
    if text_only:  # not a hybrid SWA architecture in SGLang: every layer full
        assert shape_from_config(text_only).swa_layers == 0


def test_deepseek_v4_bytes_per_token_match_sglang_kts_own_calculator():
    """Runs sglang-kt 0.7.2's own DSv4MemoryCalculator (model_executor/memory_profiler.py) and the ring sizes it reads
    (mem_cache/deepseekv4_memory_pool.py get_compress_state_ring_size), taken from the installed wheel's source with
    a stand-in for the one CUDA call (compute capability 9.0: the FP8 layout), against kt-launch's figure."""
    import ast
    import types
    from kt_launch.resolve.memory import kv_bytes_per_token
    d = _sglang_kt_models_dir()
    if d is None:
        pytest.skip("the sglang-kt 0.7.2 venv (KT_LAUNCH_VENVS/sglang-kt) is not built here")
    srt = d.parent

    def take(path, name):
        tree = ast.parse((srt / path).read_text())
        node = next(n for n in tree.body if getattr(n, "name", None) == name)
        return ast.get_source_segment((srt / path).read_text(), node)

    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_capability=lambda *a: (9, 0)))
    ns = {"torch": fake_torch, "logger": types.SimpleNamespace(info=lambda *a, **k: None),
          "ModelConfig": object, "ModelRunner": object, "DSv4PoolSizes": lambda **kw: kw}
    exec("from __future__ import annotations\n" + take("mem_cache/deepseekv4_memory_pool.py",
                                                        "get_compress_state_ring_size"), ns)
    exec("from __future__ import annotations\n" + take("model_executor/memory_profiler.py", "DSv4MemoryCalculator"), ns)
    cfg = real("deepseek-ai--DeepSeek-V4-Flash")
    m = shape_from_config(cfg)
    mc = types.SimpleNamespace(qk_nope_head_dim=m.qk_nope_head_dim, qk_rope_head_dim=m.qk_rope_head_dim,
                               index_head_dim=cfg["index_head_dim"], compress_ratios=cfg["compress_ratios"],
                               window_size=cfg["sliding_window"])
    for r in (0.1, 0.37, 0.9):
        theirs = ns["DSv4MemoryCalculator"](mc, page_size=256, swa_ratio=r).bytes_per_full_token
        assert kv_bytes_per_token(m, 1, swa_ratio=r) == math.ceil(theirs), r


def test_mimo_v2_flash_sliding_window_layers_have_their_own_heads():
    """MiMoV2FlashForCausalLM is a hybrid SWA architecture in SGLang (configs/model_config.py:1479-1491): its
    hybrid_layer_pattern 1s are sliding-window layers of swa_num_key_value_heads x (swa_head_dim + swa_v_head_dim)
    (configs/model_config.py:506-515, 783-794), the 0s full layers of num_key_value_heads x (head_dim + v_head_dim).
    The keys as SGLang reads them (a MoE config of MiMo-V2-Flash's attention shape: 48 layers, 9 full)."""
    from kt_launch.resolve.memory import kv_bytes_per_token
    pattern = [0 if i % 6 == 5 or i == 0 else 1 for i in range(48)][:47] + [0]
    cfg = {"architectures": ["MiMoV2FlashForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 48,
           "n_routed_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
           "first_k_dense_replace": 1, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 192,
           "v_head_dim": 128, "swa_num_key_value_heads": 8, "swa_head_dim": 192, "swa_v_head_dim": 128,
           "hybrid_layer_pattern": pattern}
    m = shape_from_config(cfg)
    full = pattern.count(0)
    assert (m.kv_layers, m.swa_layers) == (full, 48 - full)
    assert kv_bytes_per_token(m, 1) == math.ceil(4 * 320 * 2 * full + 0.8 * 8 * 320 * 2 * (48 - full))
    assert kv_bytes_per_token(m, 8) == math.ceil(1 * 320 * 2 * full + 0.8 * 1 * 320 * 2 * (48 - full))
    cfg["hybrid_layer_pattern"] = [1, 0, "x"]  # not SGLang's list: every layer full, no SWA pool
    assert shape_from_config(cfg).swa_layers == 0
