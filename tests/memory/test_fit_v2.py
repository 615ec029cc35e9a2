"""`kt-launch fit` and the dry-run's fit you can paste (issue 17 item 10): derived --max-total-tokens, rows that never
promise KV that does not fit, MoE-LoRA rows, impossible targets as errors, the margin, a GPU of unknown size."""

import json

from kt_launch.app import Request, gather_inputs
from kt_launch.cli import main
from kt_launch.core.memory import MOE_LORA_FIT
from kt_launch.resolve.memory_fit import fit_rows
from kt_launch.resolve.pipeline import resolve

from memory.support import GiB, codes, dry_json, host


def rows_of(profile_path, host_name, *sets):
    _, inp = gather_inputs(Request(profile=str(profile_path), sets=tuple(sets), host_facts=host(host_name)))
    plan = resolve(inp)
    return plan, fit_rows(inp, plan.values)


def test_default_mla_plan_passes_max_total_tokens(models, profile, capsys):
    """A default plan sizes KV, so it passes --max-total-tokens (derived) and never trips its own KT-W607."""
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"method": "FP8"}), "rtx4090_8x", "server.tp_size=8")
    r = doc["resolved"]["server.max_total_tokens"]
    assert r["source"] == "derived" and r["value"] >= 32768
    assert doc["argv"][doc["argv"].index("--max-total-tokens") + 1] == str(r["value"])
    assert "KT-W607" not in codes(doc)
    assert min(g["kv_tokens"] for g in doc["memory"]["gpus"]) == r["value"]
    assert all(g["free_bytes"] >= 0 for g in doc["memory"]["gpus"])
    # all experts fit on an H200: the pool gets everything left, well past the 32k target
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V2-Lite"), kt={"method": "BF16"}), "h200_1x")
    assert doc["resolved"]["server.max_total_tokens"]["value"] > 4 * 32768 and "KT-W607" not in codes(doc)
    # a user's count keeps the user's KV choice: nothing derived, KT-W607 says what it risks
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"method": "FP8"}), "rtx4090_8x", "server.tp_size=8",
                       "kt.num_gpu_experts=1")
    assert "server.max_total_tokens" not in doc["resolved"] and "KT-W607" in codes(doc)


def test_fit_rows_never_promise_kv_that_does_not_fit(models, profile, capsys):
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8"})
    plan, rows = rows_of(p, "rtx4090_8x")
    assert rows.findings == ()
    missing = [r for r in rows if r["max_gpu_experts"] is None]
    assert missing and all(r["set"] == "-" and "do not fit" in r["limited_by"] for r in missing)
    for r in rows:
        if r["max_gpu_experts"] is None or r["tp_size"] not in (1, 8):
            continue
        sets = [s for s in r["set"].replace("--set ", "").split(" ") if s]
        rc, doc = dry_json(capsys, p, "rtx4090_8x", *sets)
        assert not codes(doc) & {"KT-E601", "KT-E603", "KT-W604", "KT-W606", "KT-E613"}, r
        assert min(g["kv_tokens"] for g in doc["memory"]["gpus"]) == r["kv_tokens"]


def test_moe_lora_rows_say_every_expert_stays_on_the_cpu(models, profile, capsys, tmp_path):
    p = profile(models("DeepSeek-V2-Lite"), moe_lora={"path": str(tmp_path / "adapter"), "sft_method": "AMXBF16_SFT"})
    plan, rows = rows_of(p, "h200_1x")
    assert rows and all(r["max_gpu_experts"] == 0 and r["limited_by"] == MOE_LORA_FIT for r in rows)
    assert all("kt.num_gpu_experts" not in r["set"] for r in rows)
    main(["fit", "--profile", str(p), "--host-facts", host("h200_1x")])
    assert "0: MoE-LoRA keeps every expert on the CPU" in capsys.readouterr().out
    main(["--profile", str(p), "--host-facts", host("h200_1x"), "--dry-run"])
    text = capsys.readouterr().out
    assert "fit: 0: MoE-LoRA keeps every expert on the CPU" in text and "at most" not in text.split("fit:")[1][:40]


def test_an_impossible_kv_target_is_an_error(models, profile, capsys):
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8"}, fit={"kv_tokens": 5_000_000})
    rc, doc = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8")
    assert rc == 3
    f = next(f for f in doc["findings"] if f["code"] == "KT-E613")
    left = int(f["message"].split("at most ")[1].split(" ")[0])
    assert "fit.kv_tokens=5000000" in f["message"] and 32768 < left < 5_000_000 and f"at most {left}" in f["fix"]
    assert doc["memory"]["fit"]["max_gpu_experts"] is None and doc["memory"]["fit"]["fits"] is False
    main(["--profile", str(p), "--host-facts", host("rtx4090_8x"), "--set", "server.tp_size=8", "--dry-run"])
    text = capsys.readouterr().out
    assert "at most -1" not in text and "do not fit on gpu" in text
    plan, rows = rows_of(p, "rtx4090_8x", "server.tp_size=8")
    assert {r["kv_tokens"] for r in rows} == {8192, 32768, 131072, 5_000_000}
    assert [f.code for f in rows.findings] == ["KT-E613"] and rows.findings[0].level == "error"


def test_gpu_margin_is_kept_free(models, profile, capsys):
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8"})
    rc, base = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8")
    rc, kept = dry_json(capsys, p, "rtx4090_8x", "server.tp_size=8", "fit.gpu_margin_mib=2048")
    g0, g1 = base["memory"]["gpus"][0], kept["memory"]["gpus"][0]
    assert g1["margin_bytes"] == 2 * GiB and g1["reserve_bytes"] - g0["reserve_bytes"] == 2 * GiB
    n0, n1 = (d["resolved"]["kt.num_gpu_experts"]["value"] for d in (base, kept))
    per_layer = base["memory"]["fit"]["per_layer_bytes"]
    assert n1 < n0 and n0 - n1 <= 2 * GiB // per_layer + 1


def test_gpu_of_unknown_size_is_not_a_traceback(models, profile, capsys, tmp_path):
    doc = json.loads(open(host("l20_1x")).read())
    doc["gpus"][0]["memory_bytes"] = 0
    hf = tmp_path / "zero.json"
    hf.write_text(json.dumps(doc))
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"})
    rc = main(["--profile", str(p), "--host-facts", str(hf), "--dry-run", "--json"])
    out = capsys.readouterr().out
    assert rc in (0, 2, 3) and "Traceback" not in out
    if rc != 2:  # host-fact validation may refuse the file first (exit 2); the plan itself must cope
        mem = json.loads(out)["memory"]
        assert mem["gpus"] == [] and any("memory size" in n for n in mem["notes"])
