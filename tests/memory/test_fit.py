"""The fit on recorded hosts, through the real CLI: resolved kt.num_gpu_experts, findings, the JSON contract."""

import json

from kt_launch.cli import main

from memory.support import GiB, codes, dry_json, host

CONTRACT_GPU = {"index", "name", "total_bytes", "weights_bytes", "gpu_experts_bytes", "kv_bytes_per_token",
                "kv_tokens", "reserve_bytes", "free_bytes"}


def fitted_tightly(doc, target):
    """With the resolved count every GPU keeps `target` KV tokens, and one more expert per layer would not."""
    mem = doc["memory"]
    per_layer = mem["fit"]["per_layer_bytes"]
    for g in mem["gpus"]:
        left = g["total_bytes"] - g["reserve_bytes"] - g["weights_bytes"] - g["gpu_experts_bytes"] \
            - target * g["kv_bytes_per_token"]
        assert left >= 0
        yield left < per_layer


def test_h200_v2_lite_all_experts_fit(models, profile, capsys):
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V2-Lite"), kt={"method": "BF16"}), "h200_1x")
    r = doc["resolved"]["kt.num_gpu_experts"]
    assert (r["value"], r["source"]) == (64, "derived")
    assert "KT-I602" in codes(doc)  # kt-kernel adds nothing there
    assert "--kt-num-gpu-experts" in doc["argv"] and doc["argv"][doc["argv"].index("--kt-num-gpu-experts") + 1] == "64"
    mem = doc["memory"]
    assert set(mem["gpus"][0]) >= CONTRACT_GPU and set(mem["ram"]) >= {"total_bytes", "experts_bytes", "other_bytes",
                                                                         "need_bytes"}
    assert mem["fit"] == {**mem["fit"], "max_gpu_experts": 64, "kv_tokens": 32768, "limited_by": "experts per layer"}
    g = mem["gpus"][0]
    assert g["free_bytes"] == g["total_bytes"] - g["reserve_bytes"] - g["weights_bytes"] - g["gpu_experts_bytes"] \
        - g["kv_tokens"] * g["kv_bytes_per_token"]
    # every routed expert stays in RAM too, in the CPU method's format (BF16 from the HF dir: header bytes)
    assert mem["ram"]["experts_bytes"] == 26 * 64 * 3 * 2048 * 1408 * 2


def test_h200_v3_fp8_fit_leaves_the_kv_target(models, profile, capsys):
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"method": "FP8"}), "h200_1x",
                       "server.max_total_tokens=65536")
    n = doc["resolved"]["kt.num_gpu_experts"]
    assert n["source"] == "derived" and 0 < n["value"] < 256
    assert "server.max_total_tokens" in n["reason"] and "NVIDIA H200" in n["reason"]
    assert all(fitted_tightly(doc, 65536))
    assert doc["memory"]["gpus"][0]["kv_tokens"] == 65536


def test_8x4090_v3_tp8_and_a_copied_count(models, profile, capsys):
    """sgl-project/sglang#12255: a count copied from an 8 x 48 GB doc on 8 x 24 GB cards."""
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8"})
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8")
    fitted = doc["resolved"]["kt.num_gpu_experts"]["value"]
    assert len(doc["memory"]["gpus"]) == 8 and all(fitted_tightly(doc, 32768))
    assert doc["memory"]["fit"]["limited_by"] == "gpu 0"  # rank 0 also holds kt's staging buffer
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8", "kt.num_gpu_experts=200")
    assert rc == 3 and "KT-E603" in codes(doc)
    msg = next(f for f in doc["findings"] if f["code"] == "KT-E603")
    assert "kt.num_gpu_experts=200" in msg["message"] and f"kt.num_gpu_experts={fitted}" in msg["fix"]
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8", f"kt.num_gpu_experts={fitted + 3}")
    assert "KT-W604" in codes(doc) and "KT-E603" not in codes(doc)  # fits, but squeezes the KV cache


def test_weights_alone_do_not_fit(models, profile, capsys):
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"method": "FP8"}), "rtx4090_8x",
                       "server.mem_fraction_static=0.5")
    assert rc == 3
    f = next(f for f in doc["findings"] if f["code"] == "KT-E601")
    assert "GPU 0 (NVIDIA GeForce RTX 4090" in f["message"] and "server.tp_size" in f["fix"]
    assert doc["resolved"]["kt.num_gpu_experts"]["value"] == 0


def test_l20_qwen3(models, profile, capsys):
    rc, doc = dry_json(capsys, profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"}), "l20_1x")
    n = doc["resolved"]["kt.num_gpu_experts"]["value"]
    assert 0 < n < 128 and all(fitted_tightly(doc, 32768))
    g = doc["memory"]["gpus"][0]
    assert g["kv_bytes_per_token"] == 4 * 256 * 48 * 2
    # SGLang's default for a 46068 MiB GPU at TP 1: chunk 4096, CUDA-graph bs 32 (server_args.py:1308-1317)
    assert doc["memory"]["mem_fraction_static"] == round((46068 - (512 + 4096 * 1.5 + 32 * 2 + 128)) / 46068, 3)


def test_ram_rule_uses_the_plan(models, profile, capsys):
    """KT-E230: every routed expert (GPU-placed too) + kt-kernel buffers against the host's RAM."""
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"method": "FP8"}), "l20_1x")
    ram = doc["memory"]["ram"]
    assert ram["need_bytes"] == ram["experts_bytes"] + ram["other_bytes"] > 512 * GiB
    assert "KT-E230" in codes(doc) and rc == 3
    # `fit` reads the same plan: the same RAM error, and exit 3 with it (issue 16: it used to exit 0)
    rc = main(["fit", "--profile", str(profile(models("DeepSeek-V3"), kt={"method": "FP8"})), "--host-facts",
               host("l20_1x"), "--json"])
    fit = json.loads(capsys.readouterr().out)
    assert rc == 3 and not fit["ok"] and "KT-E230" in [f["code"] for f in fit["findings"] if f["level"] == "error"]
    assert fit["ram"]["need_bytes"] == ram["need_bytes"]


def test_no_gpu_facts_and_moe_lora_stay_zero(models, profile, capsys, tmp_path):
    hf = json.loads(open(host("l20_1x")).read())
    hf["gpus"] = []
    p = tmp_path / "nogpu.json"
    p.write_text(json.dumps(hf))
    rc = main(["--profile", str(profile(models("DeepSeek-V2-Lite"), kt={"method": "BF16"})), "--host-facts", str(p),
               "--dry-run", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["resolved"]["kt.num_gpu_experts"]["value"] == 0 and "KT-I605" in codes(doc)
    lora = profile(models("DeepSeek-V2-Lite"), moe_lora={"path": str(tmp_path / "adapter"), "sft_method": "AMXBF16_SFT"})
    rc, doc = dry_json(capsys, lora, "h200_1x")
    r = doc["resolved"]["kt.num_gpu_experts"]
    assert (r["value"], r["source"]) == (0, "derived")


def test_fit_command(models, profile, capsys):
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8"})
    rc = main(["fit", "--profile", str(p), "--host-facts", host("rtx4090_8x"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    # the profile's own TP 1 cannot hold V3's non-expert weights on a 24 GB card: fit is BLOCKED as --dry-run is
    # (issue 23 item 4: the same plan's findings decide), and its rows say what fits (TP 2 and up)
    assert rc == 3 and "KT-E601" in codes(doc)
    assert sorted({r["tp_size"] for r in doc["rows"]}) == [1, 2, 4, 8]
    assert {r["kv_tokens"] for r in doc["rows"]} == {8192, 32768, 131072}
    by = {(r["tp_size"], r["kv_tokens"]): r for r in doc["rows"]}
    assert by[(8, 8192)]["max_gpu_experts"] >= by[(8, 32768)]["max_gpu_experts"] >= by[(8, 131072)]["max_gpu_experts"]
    assert by[(8, 32768)]["max_gpu_experts"] > by[(4, 32768)]["max_gpu_experts"]
    assert by[(8, 32768)]["set"] == (f"--set server.tp_size=8 --set kt.num_gpu_experts="
                                     f"{by[(8, 32768)]['max_gpu_experts']} --set server.max_total_tokens=32768")
    assert doc["ram"]["need_bytes"] > doc["ram"]["experts_bytes"]
    # the --set line reproduces the fit through the dry-run
    rc, plan = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8",
                        f"kt.num_gpu_experts={by[(8, 32768)]['max_gpu_experts']}", "server.max_total_tokens=32768")
    assert not codes(plan) & {"KT-E603", "KT-W604", "KT-E601"}
    assert main(["fit", "--profile", str(p), "--host-facts", host("h200_1x")]) == 0
    assert "kt.num_gpu_experts=" in capsys.readouterr().out
