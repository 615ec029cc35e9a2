"""Memory plan v2 (issue 17 items 1-9): each sglang-kt 0.7.2 / kt-kernel behaviour, with the issue's numbers, through
the real CLI and the real header reader on sparse checkpoints built from the published tensor lists."""

import json
import math

from kt_launch.app import Request, gather_inputs
from kt_launch.cli import main
from kt_launch.facts.artifacts import _Cache, model_dir_facts
from kt_launch.core.fileid import tensor_nbytes
from kt_launch.facts.model import read_model_facts
from kt_launch.facts.weights import weight_bytes
from kt_launch.resolve.memory_fit import fit_rows
from kt_launch.resolve.memory import (default_mem_fraction, kv_bytes_per_token, mla_copy_bytes,
                                      nonexpert_share, sglang_gpu_defaults)
from kt_launch.resolve.pipeline import resolve

from memory.support import codes, dry_json, host, tensors

V3_COPIES = 128 * (128 + 128) * 512 * 2 * 61  # heads x (qk_nope + v) x kv_lora_rank x BF16 x layers


def facts(path):
    model = read_model_facts(str(path))
    return model, weight_bytes(model_dir_facts(str(path), _Cache()), model)


def host_file(tmp_path, base: str, name: str = "h.json", **change) -> str:
    doc = json.loads(open(host(base)).read())
    for k, v in change.items():
        if k == "flags":
            doc["cpu"]["flags"] = v
        elif k == "ram":
            doc["memory"] = {"total_bytes": v, "available_bytes": v - (4 << 30)}
        else:
            doc[k] = v
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


# -- 1. MLA weight copies ---------------------------------------------------------------------------------

def test_v3_gpu_weights_include_w_kc_w_vc(models, profile, capsys):
    """deepseek_weight_loader.py:516-521, 556-578: BF16 w_kc/w_vc beside kv_b_proj, +2.05 GB at TP1 on V3."""
    assert round(V3_COPIES / 1e9, 2) == 2.05
    model, w = facts(models("DeepSeek-V3"))
    for tp, hosts in ((1, "h200_1x"), (8, "rtx4090_8x")):
        rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"method": "FP8"}), hosts, f"server.tp_size={tp}")
        g = doc["memory"]["gpus"][0]
        assert g["mla_copies_bytes"] == V3_COPIES // tp == mla_copy_bytes(model, tp)
        assert g["nonexpert_bytes"] == nonexpert_share(w, model, tp) + V3_COPIES // tp
        assert g["weights_bytes"] == g["nonexpert_bytes"] + g["kt_buffers_bytes"]
    kimi = read_model_facts(str(models("Kimi-K2-Thinking")))
    assert round(mla_copy_bytes(kimi, 1) / 1e9, 2) == 1.02  # 64 heads


# -- 2./3. DeepSeek-V3.2's indexer: KV per token and replicated weights ---------------------------------------------

def test_v32_kv_bytes_per_token_include_the_indexer(models, profile, capsys):
    model, _ = facts(models("DeepSeek-V3.2"))
    mla, indexer = (512 + 64) * 61 * 2, (128 + 128 // 128 * 4) * 61  # uint8 keys + one FP32 scale per 128
    assert kv_bytes_per_token(model, 1) == kv_bytes_per_token(model, 8) == mla + indexer
    assert 1.10 < (mla + indexer) / mla < 1.12  # the "about +11 %"
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3.2"), kt={"method": "FP8"}), "h200_1x")
    assert doc["memory"]["gpus"][0]["kv_bytes_per_token"] == mla + indexer
    v3 = read_model_facts(str(models("DeepSeek-V3")))
    assert kv_bytes_per_token(v3, 1) == mla  # V3 has no index_topk: no indexer
    # --kv-cache-dtype fp8_e4m3: 512 FP8 + 4 FP32 scales + 64 BF16 rope = 656 B per layer (mixin :372-386)
    assert kv_bytes_per_token(model, 1, elem=1) == 656 * 61 + indexer
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3.2"), kt={"method": "FP8"},
                                       server={"extra_args": ["--kv-cache-dtype", "fp8_e4m3"]}), "h200_1x")
    assert doc["memory"]["gpus"][0]["kv_bytes_per_token"] == 656 * 61 + indexer


def test_replicated_weights_are_not_divided_by_tp(models):
    """nsa_indexer.py:187-209 and kimi_k25.py:557-567: ReplicatedLinear on every rank."""
    _, w32 = facts(models("DeepSeek-V3.2"))
    _, w3 = facts(models("DeepSeek-V3"))
    idx = sum(tensor_nbytes(d, s) for n, (d, s) in tensors("DeepSeek-V3.2").items()
              if ".indexer." in n and int(n.split(".")[2]) < 61)
    assert idx > 0.8e9 and w32.replicated_bytes - w3.replicated_bytes == idx
    assert w32.sharded_bytes == w3.sharded_bytes
    model, w = facts(models("Kimi-K2.5"))
    tower = sum(tensor_nbytes(d, s) for n, (d, s) in tensors("Kimi-K2.5").items()
                if n.startswith(("vision_tower.", "mm_projector.")))
    proj = sum(tensor_nbytes(d, s) for n, (d, s) in tensors("Kimi-K2.5").items() if n.startswith("mm_projector."))
    assert proj > 0.1e9 and tower > proj
    _, k2 = facts(models("Kimi-K2-Thinking"))  # the same text model without the tower
    assert w.replicated_bytes - k2.replicated_bytes == tower and w.sharded_bytes == k2.sharded_bytes
    assert nonexpert_share(w, model, 4) - nonexpert_share(w, model, 8) == \
        math.ceil(w.sharded_bytes / 4) - math.ceil(w.sharded_bytes / 8)


# -- 4. the layerwise-prefill layer is allocated lazily ------------------------------------------------------

def test_layerwise_prefill_without_max_total_tokens_warns(models, profile, capsys):
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8", "gpu_prefill_token_threshold": 1024})
    rc, doc = dry_json(capsys, p, "h200_1x", "kt.num_gpu_experts=4")
    f = next(f for f in doc["findings"] if f["code"] == "KT-W611")
    assert "kt_ep_wrapper.py:5749-5756" in f["message"] and "server.max_total_tokens" in f["fix"]
    g = doc["memory"]["gpus"][0]
    assert g["kt_buffers_bytes"] > 256 * 3 * 7168 * 2048  # the full layer of 256 FP8 experts is in the plan
    rc, doc = dry_json(capsys, p, "h200_1x", "kt.num_gpu_experts=4", "server.max_total_tokens=32768")
    assert "KT-W611" not in codes(doc)
    rc, doc = dry_json(capsys, p, "h200_1x", "kt.num_gpu_experts=4", "kt.method=MXFP4", "kt.weight_path=/nonexistent")
    assert "KT-W611" not in codes(doc)  # SGLang reserves MXFP4's layer before KV sizing (model_runner.py:593-607)
    rc, doc = dry_json(capsys, p, "h200_1x")  # the fit derives --max-total-tokens, which keeps the room
    assert "KT-W611" not in codes(doc) and doc["resolved"]["server.max_total_tokens"]["source"] == "derived"


# -- 5./6. RAM by kt-kernel's CPU variant ------------------------------------------------------------------------

def test_rawint4_ram_keeps_fp32_group_scales(models, profile, capsys, tmp_path):
    p = profile(models("Kimi-K2-Thinking"), kt={"method": "RAWINT4"})
    params = 60 * 384 * 3 * 7168 * 2048
    rc, doc = dry_json(capsys, p, "h200_1x")  # an AMX host
    ram = doc["memory"]["ram"]
    assert ram["cpu_variant"] == "amx" and ram["experts_bytes"] == params // 2 + 4 * params // 32
    assert ram["experts_bytes"] / params == 0.625
    avx2 = host_file(tmp_path, "h200_1x", flags=["avx", "avx2", "fma", "sse4_2"])
    rc, doc = dry_json(capsys, p, avx2, "kt.num_gpu_experts=0")
    ram = doc["memory"]["ram"]
    # the checkpoint's BF16 scales (and its 8-byte weight_shape rows): 0.5625 B/param
    assert ram["cpu_variant"] == "avx2" and ram["experts_bytes"] == params * 9 // 16 + 60 * 384 * 3 * 8


def test_avx2_host_does_not_hold_gpu_experts_in_ram(models, profile, capsys, tmp_path):
    """Kimi-K2.5, RAWINT4, TP4, 228 GPU experts per layer, a 256 GB host: runs on AVX2 (no KT-E230)."""
    h200 = json.loads(open(host("h200_1x")).read())["gpus"][0]
    gpus = [{**h200, "index": i} for i in range(4)]
    ram = 256 << 30
    p = profile(models("Kimi-K2.5"), kt={"method": "RAWINT4", "num_gpu_experts": 228}, server={"tp_size": 4})
    avx2 = host_file(tmp_path, "h200_1x", "avx2.json", flags=["avx", "avx2", "fma"], ram=ram, gpus=gpus)
    rc, doc = dry_json(capsys, p, avx2)
    r = doc["memory"]["ram"]
    assert "KT-E230" not in codes(doc) and not r["gpu_experts_in_ram"]
    assert r["experts_bytes"] == 570761441280 * (384 - 228) // 384  # 156 of 384 per layer, checkpoint bytes
    amx = host_file(tmp_path, "h200_1x", "amx.json", ram=ram, gpus=gpus)
    rc, doc = dry_json(capsys, p, amx)
    assert "KT-E230" in codes(doc) and doc["memory"]["ram"]["gpu_experts_in_ram"]
    rc, doc = dry_json(capsys, p, avx2, "kt.num_gpu_experts=0")
    e230 = next(f for f in doc["findings"] if f["code"] == "KT-E230")
    assert "(AMXINT4)" not in e230["fix"] and "avx2 build has no AMXINT4" in e230["fix"]


# -- 7. multimodal mem_fraction_static ---------------------------------------------------------------------------

def test_kimi_k25_mem_fraction_scaled_when_unset(models, profile, capsys):
    p = profile(models("Kimi-K2.5"), kt={"method": "RAWINT4"})
    rc, doc = dry_json(capsys, p, "l20_1x")
    chunk, bs = sglang_gpu_defaults(46068, 1)
    base = default_mem_fraction(46068, 1, chunk, bs)
    mf = doc["memory"]["mem_fraction_static"]
    assert math.isclose(mf, base * 0.95 * (1 - 0.1 * (27 * 1152 ** 2 / (24 * 1024 ** 2) - 1)))
    assert round(mf / base, 2) == 0.91 and "multimodal" in doc["memory"]["mem_fraction_source"]
    rc, doc = dry_json(capsys, p, "l20_1x", "server.mem_fraction_static=0.85")
    assert doc["memory"]["mem_fraction_static"] == 0.85  # a user value is SGLang's as given


# -- 8. FP8 block-128 TP divisibility ------------------------------------------------------------------------

def test_minimax_m21_tp8_is_refused(models, profile, capsys):
    p = profile(models("MiniMax-M2.1"), kt={"method": "FP8"})
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8")
    assert rc == 3
    f = next(f for f in doc["findings"] if f["code"] == "KT-E610")
    assert "server.tp_size=8" in f["message"] and "1536 / server.tp_size 8 = 192" in f["message"]
    assert "fp8.py:854-866" in f["message"] and "[1, 2, 4]" in f["fix"]
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=4")
    assert "KT-E610" not in codes(doc)
    assert main(["fit", "--profile", str(p), "--host-facts", host("rtx4090_8x"), "--json"]) in (0, 3)
    out = json.loads(capsys.readouterr().out)
    assert sorted({r["tp_size"] for r in out["rows"]}) == [1, 2, 4]
    _, inp = gather_inputs(Request(profile=str(p), host_facts=host("rtx4090_8x")))
    rows = fit_rows(inp, resolve(inp).values)
    assert [(f.code, f.level) for f in rows.findings] == [("KT-I614", "info")]
    assert "server.tp_size 8 left out" in rows.findings[0].message and "= 192" in rows.findings[0].message


# -- 9. a thin activation reserve ------------------------------------------------------------------------------

def test_qwen3_235b_on_one_4090_with_mem_fraction_092_warns(models, profile, capsys):
    """kvcache-ai/ktransformers#1678: 1 GPU expert, mem_fraction_static 0.92, chunk 4096 on a 24 GB card OOMs."""
    p = profile(models("Qwen3-235B-A22B"), kt={"method": "BF16", "num_gpu_experts": 1},
                server={"mem_fraction_static": 0.92, "chunked_prefill_size": 4096})
    rc, doc = dry_json(capsys, p, "rtx4090_8x")
    f = next(f for f in doc["findings"] if f["code"] == "KT-W612")
    # 24564 MiB x 0.08 = 1.9 GiB; SGLang's default on a 24 GB card keeps 512 + 2048 x 1.5 + 24 x 2 + 128 MiB = 3.7 GiB,
    # and its estimate at the user's chunk 4096 is 512 + 4096 x 1.5 + 48 + 128 MiB = 6.7 GiB
    assert "leaves 1.9 GiB" in f["message"] and "below the 3.7 GiB" in f["message"]
    assert "chunked_prefill_size 4096 needs 6.7 GiB" in f["message"] and "unset server.mem_fraction_static" in f["fix"]
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.mem_fraction_static=0.7")
    assert "KT-W612" not in codes(doc)
    # KV capped by server.max_total_tokens leaves the static room it does not take to the activations
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.max_total_tokens=4096")
    assert "KT-W612" not in codes(doc)
