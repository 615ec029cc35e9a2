"""More published deployments (BENCHMARKS.md, "Published deployments: the table"), each from a sparse checkpoint with
the published tensor list and the settings the source gives, nothing else (unset = SGLang's / kt-launch's default).

- doc/en/Kimi-K2-Thinking.md: Kimi-K2-Thinking, AMXINT4 CPU experts, --kt-cpuinfer 56 --kt-threadpool-count 2
  --kt-num-gpu-experts 200, --mem-fraction-static 0.98, --chunked-prefill-size 4096, --max-running-requests 37,
  --max-total-tokens 37000, --tp 8 on 8 x L20 with Xeon Gold 6454S: runs (benchmarked at 37 concurrent).
- kt-kernel/README.md: Qwen3-30B-A3B, AMXINT8, --kt-cpuinfer 64 --kt-threadpool-count 2 --kt-num-gpu-experts 32,
  --mem-fraction-static 0.92, --chunked-prefill-size 4096 on 1 x RTX 4090 24 GB with 2 x Xeon Gold 6454S: runs.
- doc/en/Kimi-K2-Thinking-Native.md: layerwise prefill "requires 9GB+ extra VRAM" (RAWINT4, TP 1).
- kt-kernel 0.7.2's own registry (kt_kernel/cli/utils/model_registry.py, MiniMax-M2.1 `max_tensor_parallel_size=4`,
  "only supports up to 4-way tensor parallelism"): TP 8 fails, TP 4 loads.
"""

import json

from memory.support import codes, dry_json, host
from memory.test_published import doc_host

ERRORS = {"KT-E601", "KT-E603", "KT-E613", "KT-E230", "KT-E610"}
SQUEEZED = {"KT-W604", "KT-W606", "KT-W608", "KT-W611"}


def gpus_of(tmp_path, base: str, n: int) -> str:
    """The recorded host `base` with n copies of its first GPU (same CPU, RAM and NUMA layout)."""
    doc = json.loads(open(host(base)).read())
    doc["gpus"] = [{**doc["gpus"][0], "index": i} for i in range(n)]
    p = tmp_path / f"{base}-x{n}.json"
    p.write_text(json.dumps(doc))
    return str(p)


def test_kimi_k2_thinking_amxint4_on_8_l20_runs(models, profile, capsys, tmp_path):
    model = models("Kimi-K2-Thinking")
    p = profile(model, kt={"method": "AMXINT4", "weight_path": "/nonexistent/k2-amxint4", "cpuinfer": 56,
                           "threadpool_count": 2, "num_gpu_experts": 200},
                server={"tp_size": 8, "mem_fraction_static": 0.98, "chunked_prefill_size": 4096,
                        "max_running_requests": 37, "max_total_tokens": 37000})
    rc, doc = dry_json(capsys, p, gpus_of(tmp_path, "l20_1x", 8))
    assert not codes(doc) & (ERRORS | SQUEEZED), [f for f in doc["findings"] if f["code"] in ERRORS | SQUEEZED]
    mem = doc["memory"]
    assert len(mem["gpus"]) == 8 and all(g["free_bytes"] >= 0 and g["kv_tokens"] == 37000 for g in mem["gpus"])
    assert 200 <= mem["fit"]["max_gpu_experts"] <= 220  # the doc's 200 is within 10 % of the largest count that fits
    # the published count fills the card: 200 x 60 layers x 24.8 MB / 8 = 37.2 GB of INT4 experts per GPU
    assert 37.0e9 < mem["gpus"][1]["gpu_experts_bytes"] < 37.4e9
    # KT-W612 fires though the doc runs: 0.98 leaves 2.5 GiB of a 48 GB card (BENCHMARKS.md, "Where KT-W612 and
    # published launch commands disagree")
    assert "KT-W612" in codes(doc)


def test_qwen3_30b_readme_on_one_4090_runs(models, profile, capsys):
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "AMXINT8", "weight_path": "/nonexistent/q30-amxint8",
                                             "cpuinfer": 64, "threadpool_count": 2, "num_gpu_experts": 32},
                server={"mem_fraction_static": 0.92, "chunked_prefill_size": 4096})
    rc, doc = dry_json(capsys, p, "rtx4090_8x")
    assert not codes(doc) & (ERRORS | SQUEEZED)
    g = doc["memory"]["gpus"][0]
    assert g["free_bytes"] >= 0 and g["kv_tokens"] >= 32768  # the KV pool gets what 32 experts per layer leave
    assert 32 <= doc["memory"]["fit"]["max_gpu_experts"] <= 36
    assert "KT-W612" in codes(doc)  # the same 1.9 GiB as ktransformers#1678 (see BENCHMARKS.md)


def test_kimi_k2_thinking_layerwise_prefill_needs_9_gb(models, profile, capsys, tmp_path):
    """The full MoE layer sglang-kt builds for layerwise prefill: 384 INT4 experts with BF16 group scales = 9.5 GB at
    TP 1 (the doc: "9GB+"), split over TP."""
    model = models("Kimi-K2-Thinking")
    got = {}
    for tp in (1, 8):
        p = profile(model, kt={"weight_path": str(model), "method": "RAWINT4", "cpuinfer": 96, "threadpool_count": 2,
                               "num_gpu_experts": 1, "gpu_prefill_token_threshold": 400},
                    server={"tp_size": tp, "mem_fraction_static": 0.94, "chunked_prefill_size": 32768,
                            "max_total_tokens": 32768})
        rc, doc = dry_json(capsys, p, doc_host(tmp_path, tp))
        g = doc["memory"]["gpus"][0]
        got[tp] = g["kt_buffers_bytes"] - 32768 * 7168 * 2  # less the rank-0 staging buffer
    assert 9e9 <= got[1] <= 9e9 * 1.10, got[1] / 1e9
    assert abs(got[8] - got[1] / 8) <= 8


def test_minimax_m21_tp_limit_matches_kt_registry(models, profile, capsys):
    p = profile(models("MiniMax-M2.1"), kt={"method": "FP8"})
    rc8, doc8 = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8")
    rc4, doc4 = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=4")
    assert rc8 == 3 and "KT-E610" in codes(doc8) and "KT-E610" not in codes(doc4)
