"""One test (or a few) per preflight rule, on synthetic checkpoints through `kt-launch check`."""

from __future__ import annotations

import shutil

import pytest

from devtools import synthetic
from devtools.synthetic import TINY
from preflight.support import AVX2_HOST, VNNI_HOST, check, codes, finding, host


@pytest.fixture
def t(tmp_path):
    root = tmp_path / "t"
    synthetic.demo(root)
    return root


def errors(tmp_path, profile, hostfacts=None):
    rc, doc, err = check(tmp_path, profile, *([hostfacts] if hostfacts else []))
    assert "Traceback" not in err
    return rc, doc


# -- MoE-LoRA format per flavour -------------------------------------------------------------------

def test_demo_tree_is_clean(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert rc == 0 and codes(doc, "error") == [], doc["findings"]


def test_fork_wants_a_pt_not_an_adapter_dir(tmp_path, t):
    synthetic.expert_adapter(t / "expert")
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, moe_lora={"path": str(t / "expert")}))
    assert rc == 3 and "torch.load" in finding(doc, "KT-E210")["message"]


def test_fork_wants_a_pt_not_safetensors(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(
        t, moe_lora={"path": str(t / "lora" / "adapter_model.safetensors")}))
    assert "safetensors" in finding(doc, "KT-E210")["message"]


def test_sglang_kt_wants_an_adapter_dir_not_the_fork_pt(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, runtime={"flavor": "sglang-kt"}, lora={"paths": []}))
    f = finding(doc, "KT-E210")
    assert "kt-moe-lora" in f["message"] and "convert_kt_to_sglang_adapter" in f["fix"]


def sglang_kt(t, adapter, moe_lora=None, **extra):
    """sglang-kt expert LoRA: AMXBF16_SFT base weights come from kt.weight_path, here the BF16 HF dir."""
    return synthetic.moe_lora_profile(t, moe_lora={"path": str(adapter), **(moe_lora or {})},
                                      runtime={"flavor": "sglang-kt"}, lora={"paths": []},
                                      **{"kt": {"weight_path": str(t / "model")}, **extra})


def test_sglang_kt_bf16_sft_reads_kt_weight_path(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert")
    rc, doc = errors(tmp_path, sglang_kt(t, a, kt={"weight_path": str(t / "kt-amxint8")}))
    f = finding(doc, "KT-E227")
    assert "kt.weight_path" in f["message"] and "sglang-kt" in f["message"]


def test_sglang_kt_expert_adapter_is_clean(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert")
    rc, doc = errors(tmp_path, sglang_kt(t, a))
    assert not [c for c in codes(doc, "error") if c.startswith("KT-E2")], doc["findings"]


def test_expert_adapter_without_config(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert")
    (a / "adapter_config.json").unlink()
    rc, doc = errors(tmp_path, sglang_kt(t, a, moe_lora={"rank": 8, "alpha": 16.0}))
    assert "KT-E216" in codes(doc, "error")


def test_expert_adapter_raw_fused_file(tmp_path, t):
    a = t / "train-out"
    synthetic.write_safetensors(a / "fused_expert_lora.safetensors", {"layers.1.experts.gate_lora_a": ("BF16", (8, 8, 64))})
    synthetic.write_json(a / "adapter_config.json", {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["x"]})
    rc, doc = errors(tmp_path, sglang_kt(t, a))
    assert "fused_expert_lora" in finding(doc, "KT-E210")["message"]


def test_adapter_without_expert_keys(tmp_path, t):
    rc, doc = errors(tmp_path, sglang_kt(t, t / "lora"))
    assert "KT-E211" in codes(doc, "error")


def test_expert_adapter_with_nonexpert_keys(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert", nonexpert=True)
    rc, doc = errors(tmp_path, sglang_kt(t, a))
    assert "KT-E212" in codes(doc, "error")


def test_expert_adapter_coverage(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert", skip=[(3, 7, "down", "B"), (2, 0, "gate", "A")])
    rc, doc = errors(tmp_path, sglang_kt(t, a))
    f = finding(doc, "KT-E213")
    assert "2 of the 144" in f["message"] and "layers.2.mlp.experts.0.gate_proj.lora_A" in f["message"]


def test_expert_adapter_rank_inconsistent(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert", rank_of=lambda layer, e, p: 4 if (layer, e) == (2, 5) else 8)
    rc, doc = errors(tmp_path, sglang_kt(t, a))
    assert "r=4" in finding(doc, "KT-E219")["message"]


def test_expert_adapter_shape_from_another_model(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert", shape=synthetic.Shape(hidden=2 * synthetic.TINY.hidden))
    rc, doc = errors(tmp_path, sglang_kt(t, a))
    assert f"hidden {synthetic.TINY.hidden}" in finding(doc, "KT-E219")["message"]


def test_fork_pt_named_otherwise_warns(tmp_path, t):
    shutil.move(t / "moe_lora.pt", t / "moe_lora.safetensors")
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, moe_lora={"path": str(t / "moe_lora.safetensors")}))
    assert rc == 0 and "KT-W206" in codes(doc, "warning")


# -- lora.paths ------------------------------------------------------------------------------------

def test_lora_dir_missing(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, lora={"paths": [str(t / "nope")]},
                                                          moe_lora={"rank": 8, "alpha": 16.0}))
    assert "lora.paths[0]" in finding(doc, "KT-E201")["message"]



def test_file_findings_name_the_key_and_the_file_as_fields(tmp_path, t):
    """A reader (a script, a UI) takes the key and the file from `fields`, never from the message (issue 27)."""
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, lora={"paths": [str(t / "nope")]},
                                                          moe_lora={"rank": 8, "alpha": 16.0}))
    assert finding(doc, "KT-E201")["fields"] == {"key": "lora.paths[0]", "file": str(t / "nope")}


def test_lora_dir_without_adapter_config(tmp_path, t):
    (t / "lora" / "adapter_config.json").unlink()
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, moe_lora={"rank": 8, "alpha": 16.0}))
    assert "KT-E216" in codes(doc, "error")


def test_lora_dir_bad_adapter_config(tmp_path, t):
    synthetic.write_json(t / "lora" / "adapter_config.json", {"peft_type": "IA3", "r": 8, "lora_alpha": 16,
                                                              "target_modules": ["q_proj"]})
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert "IA3" in finding(doc, "KT-E217")["message"]


def test_lora_dir_without_weights(tmp_path, t):
    (t / "lora" / "adapter_model.safetensors").unlink()
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert "KT-E218" in codes(doc, "error")


def test_lora_dir_extra_safetensors_is_globbed(tmp_path, t):
    synthetic.write_safetensors(t / "lora" / "moe_lora_converted.safetensors", {"x": ("BF16", (2,))})
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert "moe_lora_converted.safetensors" in finding(doc, "KT-E214")["message"]


def test_moe_lora_inside_lora_dir_warns(tmp_path, t):
    shutil.move(t / "moe_lora.pt", t / "lora" / "moe_lora.pt")
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, moe_lora={"path": str(t / "lora" / "moe_lora.pt")}))
    assert rc == 0 and "KT-W214" in codes(doc, "warning")


def test_moe_lora_globbed_from_lora_dir_is_an_error(tmp_path, t):
    """Only .pt files in the dir: SGLang's *.pt pattern picks the MoE LoRA up as if it were the adapter."""
    (t / "lora" / "adapter_model.safetensors").unlink()
    synthetic.write_torch_zip(t / "lora" / "adapter_model.bin", {"w": 1})
    shutil.move(t / "moe_lora.pt", t / "lora" / "moe_lora.pt")
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t, moe_lora={"path": str(t / "lora" / "moe_lora.pt")}))
    assert rc == 0 and "KT-W214" in codes(doc)  # .bin wins the glob; the .pt is not read


# -- kt.weight_path vs kt.method -------------------------------------------------------------------

def test_amx_inference_is_clean(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t))
    assert rc == 0, doc["findings"]


def test_amx_method_on_hf_dir_names_bf16(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"weight_path": str(t / "model")}))
    f = finding(doc, "KT-E220")
    assert "looks like BF16" in f["message"] and "kt.method=BF16" in f["fix"]


def test_bf16_method_on_amx_dir_names_amxint8(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"method": "BF16"}))
    assert "looks like AMXINT8" in finding(doc, "KT-E220")["message"]


def test_amxint4_method_on_int8_weights(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"method": "AMXINT4"}))
    assert "looks like AMXINT8" in finding(doc, "KT-E220")["message"]


def test_llamafile_needs_gguf(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"method": "LLAMAFILE"}))
    assert "KT-E220" in codes(doc, "error")
    (t / "gguf").mkdir()
    (t / "gguf" / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(32))
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"method": "LLAMAFILE", "weight_path": str(t / "gguf")}))
    assert "KT-E220" not in codes(doc)


def test_empty_weight_dir(tmp_path, t):
    (t / "empty").mkdir()
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"weight_path": str(t / "empty")}))
    assert "no expert weights" in finding(doc, "KT-E220")["message"]


def test_weight_path_missing(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"weight_path": str(t / "nope")}))
    assert "kt.weight_path" in finding(doc, "KT-E201")["message"]


def test_numa_partitions_match_pools_on_two_nodes(tmp_path, t):
    shutil.rmtree(t / "kt-amxint8")
    synthetic.amx_weights(t / "kt-amxint8", numa=2)
    profile = synthetic.amx_profile(t)
    del profile["kt"]["threadpool_count"]
    rc, doc = errors(tmp_path, profile, host(numa=2))
    assert "KT-E221" not in codes(doc)
    rc, doc = errors(tmp_path, profile, host(numa=1))
    assert "kt.threadpool_count=2" in finding(doc, "KT-E221")["fix"]


def test_kt_layout_dirs(tmp_path, t):
    """_layer_{L}/_numa_{N}/*.kt (C++ loader layout) counts as AMX weights, with partitions and bytes from names."""
    d = t / "kt-dirs"
    for layer in TINY.moe_layers:
        for n in range(2):
            p = d / f"_layer_{layer}" / f"_numa_{n}"
            p.mkdir(parents=True)
            for e in range(TINY.experts):
                for proj in ("gate", "up", "down"):
                    (p / f"INT8_{proj}_{e}_{TINY.hidden * TINY.moe_inter // 2}Byte_quant_.kt").write_bytes(b"")
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, kt={"weight_path": str(d), "threadpool_count": 1}))
    assert "split into 2 NUMA" in finding(doc, "KT-E221")["message"]
    assert "KT-E220" not in codes(doc)


def test_corrupt_shard_in_weight_dir(tmp_path, t):
    (t / "kt-amxint8" / "layer-002.safetensors").write_bytes(b"not a safetensors file at all")
    rc, doc = errors(tmp_path, synthetic.amx_profile(t))
    assert "kt.weight_path" in finding(doc, "KT-E206")["message"]
    assert "KT-E222" in codes(doc, "error")  # layer 2 is gone with it


def test_sglang_kt_int8_sft_needs_kt_files(tmp_path, t):
    a = synthetic.expert_adapter(t / "expert")
    rc, doc = errors(tmp_path, sglang_kt(t, a, moe_lora={"sft_method": "AMXINT8_SFT"},
                                         kt={"weight_path": str(t / "kt-amxint8")}))
    assert ".kt files" in finding(doc, "KT-E220")["message"]


def test_bf16_inference_reads_model_dir(tmp_path, t):
    profile = synthetic.amx_profile(t, kt={"method": "BF16"})
    del profile["kt"]["weight_path"]
    rc, doc = errors(tmp_path, profile)
    assert rc == 0, doc["findings"]
    shutil.rmtree(t / "model")
    synthetic.hf_model(t / "model", skip_layers=(2,))
    rc, doc = errors(tmp_path, profile)
    assert "layer(s) 2" in finding(doc, "KT-E222")["message"]


# -- HF model dir ----------------------------------------------------------------------------------

def test_index_names_a_missing_shard(tmp_path, t):
    (t / "model" / "model-00002-of-00002.safetensors").unlink()
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert "model-00002-of-00002.safetensors" in finding(doc, "KT-E225")["message"]


def test_index_is_not_json(tmp_path, t):
    (t / "model" / "model.safetensors.index.json").write_text("{ nope")
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert "KT-E224" in codes(doc, "error")


def test_index_without_weight_map(tmp_path, t):
    synthetic.write_json(t / "model" / "model.safetensors.index.json", {"metadata": {}})
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    assert "weight_map" in finding(doc, "KT-E224")["message"]


# -- CPU, memory, GPUs -----------------------------------------------------------------------------

def test_amx_method_on_avx2_cpu(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t), AVX2_HOST)
    f = finding(doc, "KT-E240")
    assert "avx2" in f["message"] and "AMXINT8" in f["message"]


def test_sft_needs_avx512_bf16(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t), VNNI_HOST)
    assert "avx512_vnni" in finding(doc, "KT-E240")["message"]
    rc, doc = errors(tmp_path, synthetic.amx_profile(t), VNNI_HOST)
    assert "KT-E240" not in codes(doc)  # AMXINT8 inference runs on avx512 variants


def test_flags_without_underscores_match(tmp_path, t):
    flags = ["avx2", "avx512f", "avx512bw", "avx512vnni", "avx512vbmi", "avx512bf16"]
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t), host(flags=flags))
    assert "KT-E240" not in codes(doc)


def test_variant_override(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, runtime={"env": {"KT_KERNEL_CPU_VARIANT": "amx"}}), VNNI_HOST)
    assert "SIGILL" in finding(doc, "KT-E241")["message"]
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, runtime={"env": {"KT_KERNEL_CPU_VARIANT": "avx512"}}), VNNI_HOST)
    assert "KT-W241" in codes(doc, "warning")


def test_memory_of_cpu_experts(tmp_path, t):
    shutil.rmtree(t / "model")
    big = synthetic.Shape(hidden=4096, moe_inter=2048, experts=64, layers=3)  # 2 MoE layers: 6 GiB of BF16 experts, sparse
    synthetic.hf_model(t / "model", big, sparse=True)
    profile = synthetic.moe_lora_profile(t)
    rc, doc = errors(tmp_path, profile, host(total_gib=4, avail_gib=1))
    assert "6.0 GiB" in finding(doc, "KT-E230")["message"]
    rc, doc = errors(tmp_path, profile, host(total_gib=16, avail_gib=4))
    assert "KT-W230" in codes(doc, "warning") and "KT-E230" not in codes(doc)
    rc, doc = errors(tmp_path, profile, host(total_gib=16, avail_gib=16))
    assert not {"KT-W230", "KT-E230"} & set(codes(doc))


def test_gpu_count_vs_tp_size(tmp_path, t):
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, server={"tp_size": 2}), host(gpus=1))
    assert "KT-E231" in codes(doc, "error")
    rc, doc = errors(tmp_path, synthetic.amx_profile(t, server={"tp_size": 2}), host(gpus=2))
    assert "KT-E231" not in codes(doc)
    rc, doc = errors(tmp_path, synthetic.amx_profile(t), host(gpus=0))
    assert rc == 0 and "KT-W231" in codes(doc, "warning")


def test_no_check_skips_files_but_not_isa(tmp_path):
    profile = {"model": {"path": "/nowhere/model"}, "kt": {"weight_path": "/nowhere/w", "method": "AMXINT8",
                                                          "threadpool_count": 1}}
    rc, doc, err = check(tmp_path, profile, AVX2_HOST, "--no-check")
    assert not [c for c in codes(doc) if c.startswith("KT-E2") and c != "KT-E240"]
    assert "KT-E240" in codes(doc, "error")


def test_bin_that_is_not_torch(tmp_path, t):
    (t / "lora" / "adapter_model.safetensors").rename(t / "lora" / "adapter_model.bin")  # safetensors named .bin
    rc, doc = errors(tmp_path, synthetic.moe_lora_profile(t))
    f = finding(doc, "KT-E206")
    assert "adapter_model.bin" in f["message"] and "torch.load" in f["message"]


def test_unexpected_failure_is_a_finding_not_a_traceback(tmp_path, t, monkeypatch):
    from kt_launch.facts import artifacts

    def boom(*a):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(artifacts, "weight_dir_facts", boom)
    rc, doc = errors(tmp_path, synthetic.amx_profile(t))
    assert "disk on fire" in finding(doc, "KT-W200")["message"]


def test_planning_host_without_gpu_downgrades_cpu_errors(tmp_path, t, monkeypatch):
    """This machine has no GPU: it only plans, so its CPU is a warning (KT-W240); a recorded server is an error."""
    import kt_launch.app as app
    from kt_launch.facts.host import host_from_json

    laptop = host(flags=["avx2"], gpus=0)
    import dataclasses

    live = dataclasses.replace(host_from_json(laptop), local=True)  # gathered here: identity is the field
    monkeypatch.setattr(app, "gather_host", lambda *a, **k: live)
    rc, doc, _ = check(tmp_path, synthetic.amx_profile(t), None)
    assert rc == 0 and "KT-W240" in codes(doc, "warning") and "KT-W231" in codes(doc, "warning")
    rc, doc = errors(tmp_path, synthetic.amx_profile(t), host(flags=["avx2"], gpus=1))
    assert "KT-E240" in codes(doc, "error")


def test_amxint4_sft_partitions_must_divide_intermediate(tmp_path, t):
    shutil.rmtree(t / "kt-amxint8")
    synthetic.amx_weights(t / "kt-amxint8", bits=4, numa=3)
    profile = synthetic.moe_lora_profile(t, moe_lora={"sft_method": "AMXINT4_SFT"}, kt={"threadpool_count": 3})
    rc, doc = errors(tmp_path, profile, host(numa=3))
    assert any("does not divide" in f["message"] for f in doc["findings"] if f["code"] == "KT-E221")
