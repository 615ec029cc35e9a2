"""Each bug of the seed log (shared/seed/000_e71456f00da27364.txt), reproduced on a synthetic checkpoint:
kt-launch's plan or finding instead of the late crash."""

from __future__ import annotations

import contextlib
import io
import json

from devtools import synthetic
from kt_launch.cli import main
from preflight.support import AMX_HOST, check, codes, finding, write


def dry_run(tmp_path, profile) -> tuple[int, dict]:
    p, h = write(tmp_path, profile)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["--profile", str(p), "--host-facts", str(h), "--dry-run", "--json"])
    return rc, json.loads(out.getvalue())


def seed_profile(tmp_path, **extra):
    synthetic.demo(tmp_path / "t")
    return synthetic.moe_lora_profile(tmp_path / "t", **extra)


def _flag(argv, flag):
    return argv[argv.index(flag) + 1]


def test_bug1_num_gpu_experts_resolves_to_zero(tmp_path):
    rc, doc = dry_run(tmp_path, seed_profile(tmp_path))
    assert rc == 0, doc["findings"]
    assert _flag(doc["argv"], "--kt-num-gpu-experts") == "0"
    assert doc["resolved"]["kt.num_gpu_experts"]["source"] == "derived"


def test_bug2_cpuinfer_is_always_passed(tmp_path):
    rc, doc = dry_run(tmp_path, seed_profile(tmp_path))
    n = int(_flag(doc["argv"], "--kt-cpuinfer"))
    assert 1 <= n <= AMX_HOST["cpu"]["physical_cores"]


def test_bug6_cuda_graph_disabled(tmp_path):
    rc, doc = dry_run(tmp_path, seed_profile(tmp_path))
    assert "--disable-cuda-graph" in doc["argv"]
    rc, doc, _ = check(tmp_path, seed_profile(tmp_path, server={"disable_cuda_graph": False}))
    assert rc == 3 and "KT-E123" in codes(doc, "error")


def test_bug3_base_weight_source_follows_sft_method(tmp_path):
    rc, doc = dry_run(tmp_path, seed_profile(tmp_path))
    assert doc["resolved"]["moe_lora.base_weights"]["value"] == str(tmp_path / "t" / "model")
    # AMXINT8_SFT reads kt.weight_path: pointing it at the HF dir is caught, naming what the dir is.
    t = tmp_path / "t"
    rc, doc, _ = check(tmp_path, seed_profile(tmp_path, kt={"weight_path": str(t / "model")},
                                              moe_lora={"sft_method": "AMXINT8_SFT"}))
    assert rc == 3
    f = finding(doc, "KT-E220")
    assert "AMXINT8" in f["message"] and "BF16" in f["message"]
    # ... and a converted dir is accepted.
    rc, doc, _ = check(tmp_path, seed_profile(tmp_path, moe_lora={"sft_method": "AMXINT8_SFT"},
                                              runtime={"flavor": "kt-moe-lora"}))
    assert "KT-E220" not in codes(doc)


def test_bug4_base_weights_not_found(tmp_path):
    t = tmp_path / "t"
    synthetic.demo(t)
    import shutil
    shutil.rmtree(t / "model")
    synthetic.hf_model(t / "model", experts=False)  # e.g. a non-expert export, or the wrong dir
    rc, doc, _ = check(tmp_path, synthetic.moe_lora_profile(t))
    assert rc == 3
    f = finding(doc, "KT-E227")
    assert "base weights" in f["message"] and "model.path" in f["message"]


def test_bug4_base_weights_wrong_dtype(tmp_path):
    t = tmp_path / "t"
    synthetic.demo(t)
    import shutil
    shutil.rmtree(t / "model")
    synthetic.hf_model(t / "model", expert_dtype="F8_E4M3")
    rc, doc, _ = check(tmp_path, synthetic.moe_lora_profile(t))
    assert rc == 3 and "F8_E4M3" in finding(doc, "KT-E228")["message"]


def test_bug5_torch_file_named_safetensors_in_lora_dir(tmp_path):
    """The converter's torch.save output as checkpoint-133/adapter_model_converted.safetensors."""
    t = tmp_path / "t"
    profile = synthetic.BROKEN["pickle-named-safetensors"](t)
    rc, doc, _ = check(tmp_path, profile)
    assert rc == 3
    f = finding(doc, "KT-E206")
    assert "adapter_model_converted.safetensors" in f["message"] and "torch.save" in f["message"]
    assert "header too large" in f["message"] and ".pt" in f["fix"]


def test_bug5_seed_trigger_command(tmp_path):
    """The seed's trigger: --kt-moe-lora-path <ckpt>/adapter_model_converted.safetensors and --lora-paths
    <ckpt>/adapter_model.safetensors (a file, not the dir)."""
    t = tmp_path / "t"
    synthetic.demo(t)
    conv = synthetic.moe_lora_pt(t / "lora" / "adapter_model_converted.safetensors")
    profile = synthetic.moe_lora_profile(t, moe_lora={"path": str(conv)},
                                         lora={"paths": [str(t / "lora" / "adapter_model.safetensors")]})
    rc, doc, _ = check(tmp_path, profile)
    assert rc == 3
    errs = codes(doc, "error")
    assert "KT-E215" in errs  # lora.paths names a weight file; SGLang expects the adapter directory
    assert "--lora-paths expects an adapter directory" in finding(doc, "KT-E215")["fix"]
    assert "KT-W206" in codes(doc, "warning")  # the MoE LoRA itself: torch content, .safetensors name
