"""Published deployments of day-0 models (field-2026-12.md §3; BENCHMARKS.md "Published deployments: the table"),
each from a sparse checkpoint with the published tensor list and the settings the source gives.

- N16, doc/en/Qwen3.5.md: Qwen3.5-397B-A17B BF16 on 4 x RTX 4090 (the documented minimum), TP 4, --kt-num-gpu-experts
  1, --kt-cpuinfer 60, --kt-threadpool-count 2, --mem-fraction-static 0.98, --chunked-prefill-size 4096,
  --max-total-tokens 32000, --max-running-requests 32, RAM >= 800 GB: runs. It was refused with 188.1 GiB of
  "non-expert weights" per GPU (the fused 3-D experts were not seen, issue 24 item 1).
- N6: Qwen3-Next-80B-A3B-FP8 at 100 % GPU experts on 4 x RTX 4090: tests/memory/test_day0_hybrid.py.
"""

from memory.support import codes, dry_json
from memory.test_published_more import ERRORS, gpus_of

GiB = 1 << 30


def test_qwen35_397b_on_4x4090_runs(models, profile, capsys, tmp_path):
    model = models("Qwen3.5-397B-A17B")
    p = profile(model, kt={"method": "BF16", "weight_path": str(model), "num_gpu_experts": 1, "cpuinfer": 60,
                           "threadpool_count": 2},
                server={"tp_size": 4, "mem_fraction_static": 0.98, "chunked_prefill_size": 4096,
                        "max_total_tokens": 32000, "max_running_requests": 32})
    rc, doc = dry_json(capsys, p, gpus_of(tmp_path, "rtx4090_8x", 4))
    assert not codes(doc) & ERRORS, [f for f in doc["findings"] if f["code"] in ERRORS]
    mem = doc["memory"]
    assert all(g["free_bytes"] >= 0 and g["kv_tokens"] == 32000 for g in mem["gpus"])
    # non-expert weights per GPU: a few GiB, not 188.1
    assert all(g["nonexpert_bytes"] < 8 * GiB for g in mem["gpus"])
    # RAM: every BF16 expert (60 x 512 x 3 x 4096 x 1024 x 2 B = 773 GB) against the doc's ">= 800 GB": within 10 %
    need = mem["ram"]["need_bytes"] / 1e9
    assert 773 <= need <= 1.10 * 800, (need, mem["ram"])


def test_a_safetensors_header_length_that_starts_like_a_pickle(tmp_path):
    """Two shards of the 397B checkpoint have header lengths 0x..0280 .. 0x..0580, whose first bytes are pickle
    protocol 2-5's: they were identified as pickles and their experts went missing (58 of 60 layers)."""
    from devtools import synthetic
    from kt_launch.facts.fileid import identify
    for pad in range(0, 2048, 8):
        t = {"x" * (pad + 1): ("BF16", (2,))}
        head, _ = synthetic.safetensors_bytes_header(t)
        if head[0] == 0x80 and 2 <= head[1] <= 5:
            break
    else:
        raise AssertionError("no header length of that form found")
    p = synthetic.write_safetensors(tmp_path / "m.safetensors", t)
    assert identify(str(p)).ok_safetensors


V4_PARAMS = 43 * 256 * 3 * 2048 * 4096  # DeepSeek-V4-Flash's routed-expert parameters (43 MoE layers)


def _v4_flash_on_one_5090(models, profile, capsys, tmp_path, flags=None):
    """N1's settings on one RTX 5090 (the recorded AMX host's CPU, or one with only these CPU flags)."""
    import json
    doc = json.loads(open(gpus_of(tmp_path, "rtx4090_8x", 1)).read())
    doc["gpus"][0].update(name="NVIDIA GeForce RTX 5090", memory_bytes=32607 * (1 << 20))
    if flags is not None:
        doc["cpu"]["flags"] = flags
    h = tmp_path / "5090.json"
    h.write_text(json.dumps(doc))
    model = models("DeepSeek-V4-Flash")
    p = profile(model, kt={"method": "MXFP4", "weight_path": str(model), "num_gpu_experts": 10, "cpuinfer": 60,
                           "threadpool_count": 2, "gpu_prefill_token_threshold": 4096},
                server={"mem_fraction_static": 0.85, "chunked_prefill_size": 2048, "max_running_requests": 2})
    rc, out = dry_json(capsys, p, str(h))
    assert not codes(out) & ERRORS, [f for f in out["findings"] if f["code"] in ERRORS]
    return out


def test_deepseek_v4_flash_on_one_5090_runs(models, profile, capsys, tmp_path):
    """N1, doc/en/DeepSeek-V4-Flash.md: one RTX 5090 32 GB, --kt-num-gpu-experts 10, --kt-cpuinfer 60, 2 pools,
    threshold 4096, TP 1, --mem-fraction-static 0.85, chunk 2048, max-running 2: decode "20+ tok/s" (runs). Was
    KT-E601 with the whole checkpoint (148.6 GiB) as GPU non-expert weights: the FP4 ffn.experts.E.w1/w2/w3 were not
    seen. The attention tensors of the sparse checkpoint are an approximation (support.py), so no VRAM ratio is
    claimed; the routed experts are exact: 43 x 256 x 3 x (2048 x 4096 / 2 + 2048 x 4096 / 32) B.

    RAM (BENCHMARKS "DeepSeek-V4-Flash's RAM"): kt-kernel 0.7.2's AMX / AVX-512 MXFP4 class keeps the checkpoint's
    0.53125 B/param for all 256 experts of a layer, the 10 GPU ones too, plus its two pools' buffers for chunk 2048:
    149 GB. The ~170 GB #2084 measured is the July 2026 kernel's layout (FP32 group scales, 0.625 B/param: 173 GB)."""
    out = _v4_flash_on_one_5090(models, profile, capsys, tmp_path)
    mem = out["memory"]
    assert mem["checkpoint"]["expert_bytes"] == 43 * 256 * 3 * (2048 * 4096 // 2 + 2048 * 4096 // 32)
    ram = mem["ram"]
    assert ram["experts_bytes"] == V4_PARAMS * 17 // 32 and ram["gpu_experts_in_ram"]  # 147.2 GB: file = RAM
    assert 1.5e9 < ram["need_bytes"] - ram["experts_bytes"] < 2e9  # kt-kernel's buffers, 2 pools x chunk 2048
    assert mem["gpus"][0]["kv_tokens"] >= 16384 and mem["gpus"][0]["free_bytes"] >= 0
    # the compressed pool's bytes per full token (DSv4MemoryCalculator at swa ratio 0.1; was 88,064 per layer head)
    assert mem["gpus"][0]["kv_bytes_per_token"] == 15956 and mem["gpus"][0]["kv_tokens"] % 256 == 0  # V4's pages
    assert any(n.startswith("DeepSeek-V4 compressed KV pool: 15956 B per token (swa_full_tokens_ratio 0.1")
               for n in mem["notes"])


def test_deepseek_v4_flash_on_an_avx2_host_counts_fp32_scales(models, profile, capsys, tmp_path):
    """N1 ("x86 with AVX2+FMA") on a host without AVX-512: kt-kernel 0.7.2 loads its avx2 build, whose
    AVX2MXFP4_MOE keeps FP32 group scales (operators/avx2/mxfp4-moe.hpp:121; 0.626 B/param measured with
    bench/mxfp4_resident_bytes.py) and skips the GPU-placed experts at load (:463-489): 246 of 256 experts per
    layer at 0.625 B/param, not the file's 0.53125."""
    ram = _v4_flash_on_one_5090(models, profile, capsys, tmp_path, ["avx2", "fma"])["memory"]["ram"]
    assert ram["cpu_variant"] == "avx2" and not ram["gpu_experts_in_ram"]
    assert ram["experts_bytes"] == V4_PARAMS * 5 // 8 * (43 * 256 - 43 * 10) // (43 * 256)  # 166.4 GB
    assert "the avx2 kernel's layout, not the file's" in ram["experts_source"]


def test_deepseek_v4_flash_on_a_pro_6000_with_123_gb_ram_is_refused_at_any_n(models, profile, capsys, tmp_path):
    """N3, kvcache-ai/ktransformers#2084: one RTX PRO 6000 96 GB with 123 GB of RAM, MXFP4, --kt-num-gpu-experts 110
    (no other setting given: SGLang's defaults, chunk 8192 on a 96 GB card): the scheduler's anonymous memory sits
    around 170 GB "no matter what N" and decode thrashes swap. The plan refuses it for RAM (KT-E230) with the same
    need at n = 10 and n = 110, as kt-kernel's AMX / AVX-512 build loads the GPU experts too: 147.2 GB of experts +
    5.4 GB of buffers = 152.6 GB, 0.898 of the ≈170 GB #2084 measured on the July 2026 kernel (FP32 scales: BENCHMARKS)."""
    import json
    needs = set()
    for n in (10, 110):
        doc = json.loads(open(gpus_of(tmp_path, "rtx4090_8x", 1)).read())
        doc["gpus"][0].update(name="NVIDIA RTX PRO 6000 Blackwell Workstation Edition", memory_bytes=97887 << 20)
        doc["memory"] = {"total_bytes": 123 << 30, "available_bytes": 120 << 30}
        h = tmp_path / "pro6000.json"
        h.write_text(json.dumps(doc))
        model = models("DeepSeek-V4-Flash")
        rc, out = dry_json(capsys, profile(model, kt={"method": "MXFP4", "weight_path": str(model),
                                                      "num_gpu_experts": n}), str(h))
        assert rc == 3 and "KT-E230" in codes(out), out["findings"]
        ram = out["memory"]["ram"]
        assert ram["experts_bytes"] == V4_PARAMS * 17 // 32 and out["memory"]["chunked_prefill_size"] == 8192
        needs.add(ram["need_bytes"])
    assert len(needs) == 1 and 152e9 < needs.pop() < 153e9


def test_minimax_m25_fp8_on_4x4090_runs(models, profile, capsys, tmp_path):
    """N17, doc/en/MiniMax-M2.5.md "Launch Command (4x RTX 4090 Example)": FP8 (same dir for model and weights), TP 4,
    --kt-num-gpu-experts 30, --kt-cpuinfer 96, 2 pools, threshold 400, --mem-fraction-static 0.94, chunk 32658,
    --max-total-tokens 50000: runs. Planned from MiniMax-M2.1's checkpoint: M2.5 has M2.1's MiniMaxM2ForCausalLM
    config (MiniMax-AI/MiniMax-M2.5 docs/transformers_deploy_guide.md deploys M2.5, M2.1 and M2 alike). The doc asks
    for "at least 200GB" of RAM, less than the FP8 experts alone (62 x 256 x 14.16 MB = 224.7 GB from the headers);
    the plan adds kt-kernel's buffers for chunk 32658 and 2 pools: 245 GB, 1.22 x the doc's figure (BENCHMARKS)."""
    model = models("MiniMax-M2.1")
    p = profile(model, kt={"method": "FP8", "weight_path": str(model), "cpuinfer": 96, "threadpool_count": 2,
                           "num_gpu_experts": 30, "gpu_prefill_token_threshold": 400},
                server={"tp_size": 4, "mem_fraction_static": 0.94, "chunked_prefill_size": 32658,
                        "max_total_tokens": 50000})
    rc, doc = dry_json(capsys, p, gpus_of(tmp_path, "rtx4090_8x", 4))
    assert rc == 0 and not codes(doc) & ERRORS, [f for f in doc["findings"] if f["code"] in ERRORS]
    mem = doc["memory"]
    assert all(g["free_bytes"] >= 0 and g["kv_tokens"] == 50000 for g in mem["gpus"])
    one = 3 * 3072 * 1536 + 3 * 24 * 12 * 4  # one FP8 expert and its F32 128x128 block scales
    assert mem["ram"]["experts_bytes"] == 62 * 256 * one
    assert abs(mem["gpus"][0]["gpu_experts_bytes"] - 30 * 62 * one / 4) <= 4
    assert 240e9 < mem["ram"]["need_bytes"] < 250e9


def test_glm5_fp8_on_8_gpus_runs(models, profile, capsys, tmp_path):
    """N13, doc/en/kt-kernel/GLM-5-Tutorial.md (FP8): TP 8, --kt-num-gpu-experts 30, --kt-cpuinfer 96, 2 pools,
    threshold 1024, --mem-fraction-static 0.75, chunk 16384, --max-running-requests 4, --max-total-tokens 128000,
    --kv-cache-dtype bf16: runs. The doc names no GPU; planned on the 8 x 48 GB machine of its sibling tutorials
    (Kimi-K2-Thinking-Native.md's tested configuration). From the published GLM-5-FP8 config and tensor list
    (support.py): 75 MoE layers, KV = MLA (512 + 64) x 2 B + the DSA indexer's 128 + 4 B per layer, 78 layers."""
    from memory.test_published import doc_host
    model = models("GLM-5-FP8")
    p = profile(model, kt={"method": "FP8", "weight_path": str(model), "cpuinfer": 96, "threadpool_count": 2,
                           "num_gpu_experts": 30, "gpu_prefill_token_threshold": 1024},
                server={"tp_size": 8, "mem_fraction_static": 0.75, "chunked_prefill_size": 16384,
                        "max_running_requests": 4, "max_total_tokens": 128000,
                        "extra_args": ["--kv-cache-dtype", "bf16"]})
    rc, doc = dry_json(capsys, p, doc_host(tmp_path, 8))
    assert rc == 0 and not codes(doc) & ERRORS, [f for f in doc["findings"] if f["code"] in ERRORS]
    mem = doc["memory"]
    assert all(g["free_bytes"] >= 0 and g["kv_tokens"] == 128000 for g in mem["gpus"])
    assert mem["gpus"][0]["kv_bytes_per_token"] == ((512 + 64) * 2 + 128 + 4) * 78
    one = 3 * 6144 * 2048 + 3 * 48 * 16 * 4  # one FP8 expert and its block scales
    assert mem["ram"]["experts_bytes"] == 75 * 256 * one  # the next-n layer 78 is not loaded
    assert mem["gpu_experts_total"] == 30 * 75
    # the doc's "Layerwise prefill requires one extra MoE layer's worth of VRAM": 256 FP8 experts split over TP 8 on
    # every GPU (rank 0 adds kt's chunk x hidden BF16 staging buffer)
    assert abs(mem["gpus"][1]["kt_buffers_bytes"] - 256 * one / 8) <= 8
    assert mem["gpus"][0]["kt_buffers_bytes"] - mem["gpus"][1]["kt_buffers_bytes"] == 16384 * 6144 * 2
