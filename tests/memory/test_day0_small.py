"""Issue 24 item 6: thread pools beyond the NUMA nodes, KT-E601's fix when SGLang's own reserve is the cause, a rounded
mem_fraction_static, and no unused --kt-num-gpu-experts beside --kt-gpu-experts-ratio."""

import json

from kt_launch.cli import main
from memory.support import codes, dry_json, host


def finding(doc, code):
    return next(f for f in doc["findings"] if f["code"] == code)


def test_more_thread_pools_than_numa_nodes_is_said(models, profile, capsys):
    model = models("Qwen3-30B-A3B")
    rc, doc = dry_json(capsys, profile(model, kt={"threadpool_count": 4}), "rtx4090_8x")  # 2 NUMA nodes
    f = finding(doc, "KT-W170")
    assert "[2, 3]" in f["message"] and "kt.threadpool_count=2" in f["fix"]
    rc, doc = dry_json(capsys, profile(model, kt={"threadpool_count": 2}), "rtx4090_8x")
    assert "KT-W170" not in codes(doc)


def test_e601_fix_names_sglangs_reserve_when_it_is_the_cause(models, profile, capsys):
    """A 0.07 mem_fraction_static keeps 93 % of the card for SGLang: more TP would not help."""
    p = profile(models("Qwen3-30B-A3B"), kt={"num_gpu_experts": 0}, server={"mem_fraction_static": 0.07})
    rc, doc = dry_json(capsys, p, "rtx4090_8x")
    f = finding(doc, "KT-E601")
    assert "server.mem_fraction_static" in f["fix"] and "raise server.tp_size" not in f["fix"]
    # the weights are the cause: DeepSeek-V3's 40 GB of non-expert FP8 weights on one 24 GB card
    rc, doc = dry_json(capsys, profile(models("DeepSeek-V3"), kt={"num_gpu_experts": 0}), "rtx4090_8x")
    assert "raise server.tp_size" in finding(doc, "KT-E601")["fix"]


def test_mem_fraction_static_is_printed_rounded(models, tmp_path, capsys):
    """Kimi-K2.5's multimodal factor makes SGLang's default an unrounded product (0.7832764843749999 in the issue)."""
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"model": {"path": str(models("Kimi-K2.5"))}, "runtime": {"flavor": "sglang-kt"},
                             "kt": {"method": "RAWINT4", "weight_path": str(models("Kimi-K2.5"))},
                             "server": {"port": 39123, "tp_size": 8}}))
    main(["--profile", str(p), "--host-facts", host("rtx4090_8x"), "--dry-run"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "mem_fraction_static" in x and x.startswith("memory"))
    value = line.split("mem_fraction_static ")[1].split(" ")[0]
    assert len(value.split(".")[1]) <= 4, line


def test_ratio_alone_passes_no_num_gpu_experts(models, profile, capsys):
    model = models("Qwen3-30B-A3B")
    rc, doc = dry_json(capsys, profile(model, kt={"gpu_experts_ratio": 0.25}), "rtx4090_8x")
    argv = doc["argv"]
    assert "--kt-gpu-experts-ratio" in argv and "--kt-num-gpu-experts" not in argv
    assert doc["memory"]["gpu_experts_total"] == int(48 * 128 * 0.25)
    rc, doc = dry_json(capsys, profile(model, kt={"num_gpu_experts": 8}), "rtx4090_8x")
    assert doc["argv"][doc["argv"].index("--kt-num-gpu-experts") + 1] == "8"
