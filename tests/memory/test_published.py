"""Published deployments reproduced from sparse checkpoints (BENCHMARKS.md, "Memory plan vs published deployments").

kvcache-ai/ktransformers doc/en/Kimi-K2-Thinking-Native.md: Kimi-K2-Thinking, RAWINT4, --mem-fraction-static 0.94,
--kt-gpu-prefill-token-threshold 400, two thread pools, on 1/2/4/8 x 48 GB RTX 4090 with the doc's recommended
(experts per layer, max-total-tokens, chunk); all four run, and the doc asks for at least 650 GB of RAM."""

import json

import pytest

from memory.support import GiB, codes, dry_json

MiB = 1 << 20
AMX = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
# (1, 1, 32768, 32768): the doc's first 1-GPU row; (1, 0, 30000, 30000): its current one (doc/en/kt-kernel/
# Kimi-K2-Thinking-Native.md, field-2026-12.md §3 N8), whose prefill at 32k was measured at qlen 30000
ROWS = [(1, 1, 32768, 32768), (1, 0, 30000, 30000), (2, 8, 65536, 65536), (4, 30, 80000, 65536),
        (8, 80, 100000, 65536)]
BLOCKING = {"KT-E601", "KT-E603", "KT-W604", "KT-W606", "KT-W611", "KT-W612", "KT-E613", "KT-E230", "KT-E610"}


def doc_host(tmp_path, gpus: int) -> str:
    """The doc's machine: 2 x Xeon Platinum 8488C, 2 TB on 2 NUMA nodes, n x 48 GB (49140 MiB) GPUs."""
    cpus = list(range(192))
    h = {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8488C", "physical_cores": 96, "logical_cpus": 192,
                 "usable_cpus": cpus, "flags": AMX},
         "numa": [{"id": 0, "cpus": cpus[:48] + cpus[96:144], "memory_bytes": 1024 * GiB},
                  {"id": 1, "cpus": cpus[48:96] + cpus[144:], "memory_bytes": 1024 * GiB}],
         "memory": {"total_bytes": 2048 * GiB, "available_bytes": 2000 * GiB},
         "gpus": [{"index": i, "name": "NVIDIA GeForce RTX 4090 48GB", "memory_bytes": 49140 * MiB}
                  for i in range(gpus)]}
    p = tmp_path / f"host{gpus}.json"
    p.write_text(json.dumps(h))
    return str(p)


@pytest.mark.parametrize("gpus,n,mtt,chunk", ROWS)
def test_kimi_k2_thinking_doc_rows_run(models, profile, capsys, tmp_path, gpus, n, mtt, chunk):
    model = models("Kimi-K2-Thinking")
    p = profile(model, kt={"weight_path": str(model), "method": "RAWINT4", "cpuinfer": 96, "threadpool_count": 2,
                           "num_gpu_experts": n, "gpu_prefill_token_threshold": 400},
                server={"tp_size": gpus, "mem_fraction_static": 0.94, "chunked_prefill_size": chunk,
                        "max_total_tokens": mtt})
    rc, doc = dry_json(capsys, p, doc_host(tmp_path, gpus))
    assert not codes(doc) & BLOCKING, [f for f in doc["findings"] if f["code"] in BLOCKING]
    mem = doc["memory"]
    assert all(g["free_bytes"] >= 0 and g["kv_tokens"] == mtt for g in mem["gpus"])
    # RAM: every INT4 expert with FP32 group scales (0.625 B/param, the AMX kernel) plus kt-kernel's buffers,
    # against the doc's ">= 650 GB": within +10 % at chunk 32768
    need = mem["ram"]["need_bytes"] / 1e9
    assert need >= 650 and (need <= 1.10 * 650 if chunk == 32768 else need <= 1.15 * 650)


def test_deepseek_v32_on_one_l20_vram_and_ram(models, profile, capsys):
    """doc/en/kt-kernel/deepseek-v3.2-sglang-tutorial.md: 1 x L20 48 GB, AMXINT4 (converted from the FP8 checkpoint),
    1 GPU expert, --mem-fraction-static 0.98, chunk 4096, max-running 32, max-total 40000: "about 27 GB VRAM, about
    350 GB RAM". The VRAM prediction is what the server holds once started: weights (with MLA's w_kc/w_vc), GPU
    experts, the KV pool capped at 40000 tokens (with the NSA indexer) and the CUDA context."""
    p = profile(models("DeepSeek-V3.2"), kt={"method": "AMXINT4", "weight_path": "/nonexistent/v32-int4",
                                             "num_gpu_experts": 1, "cpuinfer": 60, "threadpool_count": 2},
                server={"mem_fraction_static": 0.98, "chunked_prefill_size": 4096, "max_running_requests": 32,
                        "max_total_tokens": 40000})
    rc, doc = dry_json(capsys, p, "l20_1x")
    assert not codes(doc) & BLOCKING  # (the converted dir is not here: KT-E201 is about the files, not memory)
    g = doc["memory"]["gpus"][0]
    assert g["kv_tokens"] == 40000 and g["free_bytes"] >= 0
    vram = (g["weights_bytes"] + g["gpu_experts_bytes"] + g["kv_tokens"] * g["kv_bytes_per_token"] + 768 * MiB) / 1e9
    ram = doc["memory"]["ram"]["need_bytes"] / 1e9
    assert 0.9 <= vram / 27 <= 1.1 and 0.9 <= ram / 350 <= 1.1, (vram, ram)
