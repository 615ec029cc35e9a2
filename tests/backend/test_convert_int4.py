"""Kimi-style sources (issue 26): compressed-tensors pack-quantized INT4 experts (`weight_packed` int32 with eight
4-bit values a word, the first in the lowest nibble, stored as q + 8; `weight_scale` BF16 per group of 32 input
columns; `weight_shape`; the group size in config.json's quantization_config), dequantized per group to BF16 by the
worker, then kt-kernel's own quantizer.

The checkpoint is built here from known BF16 weights: quantized symmetrically per group and packed the way
compressed-tensors' `pack_to_int32` packs (checked against its source: value + 2**(bits-1), `packed |= value[:,
i::8] << 4*i`), written with the real safetensors of the backend venv. The dequantization is checked element by element
against (q - 8) * scale here, with no AMX; the end-to-end conversion and kt-kernel's read-back need AVX-512 or AMX
and skip elsewhere.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.backend import convert as cv

from backend.test_convert import REPO, SHAPE, kt, profile, weight_errors

GROUP = 32
QUANT_CONFIG = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                    "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": GROUP}}},
                "ignore": ["lm_head"]}

# Runs in the backend venv: writes the experts of MoE layers 1..L-1 as packed INT4 into model-experts.safetensors and
# saves the reference BF16 (the dequantized values) as reference.safetensors beside the test.
BUILD = r"""
import json, sys, numpy as np, torch
from safetensors.torch import save_file
root, E, H, I, layers, group = sys.argv[1], *map(int, sys.argv[2:6]), int(sys.argv[6])
g = torch.Generator().manual_seed(7)
tensors, ref = {}, {}
def pack(q):  # q: uint8 [rows, cols] in 0..15 (the signed value + 8), as compressed_tensors.pack_to_int32
    v = q.numpy().astype(np.uint32)
    packed = np.zeros((v.shape[0], v.shape[1] // 8), dtype=np.uint32)
    for i in range(8):
        packed |= v[:, i::8] << (4 * i)
    return torch.from_numpy(np.ascontiguousarray(packed).view(np.int32))
for layer in range(1, layers):
    for e in range(E):
        for proj, (rows, cols) in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
            w = (torch.randn((rows, cols), generator=g) * (3.0 / cols) ** 0.5).to(torch.bfloat16)
            absmax = w.float().reshape(rows, cols // group, group).abs().amax(-1)
            scale = (absmax / 7).clamp(min=1e-8).to(torch.bfloat16)
            s = scale.float().repeat_interleave(group, 1)
            q = (w.float() / s).round().clamp(-8, 7).to(torch.int32)
            name = f"model.layers.{layer}.mlp.experts.{e}.{proj}"
            tensors[name + ".weight_packed"] = pack((q + 8).to(torch.uint8))
            tensors[name + ".weight_scale"] = scale
            tensors[name + ".weight_shape"] = torch.tensor([rows, cols], dtype=torch.int32)
            ref[name] = (q.float() * s).to(torch.bfloat16)  # what dequantization must give, exactly
            assert (ref[name].float() - w.float()).abs().max() <= s.max() / 2 + 1e-6  # the quantization is sane
save_file(tensors, root + "/model-experts.safetensors")
save_file(ref, root + "/../reference.safetensors")
print(json.dumps(sorted(tensors)))
"""


def kimi_int4(root: Path, python: str) -> Path:
    """A DeepSeek-V3-shaped dir (Kimi-K2's architecture) whose routed experts are compressed-tensors packed INT4."""
    synthetic.hf_model(root, SHAPE, experts=False)
    r = subprocess.run([python, "-c", BUILD, str(root), str(SHAPE.experts), str(SHAPE.hidden), str(SHAPE.moe_inter),
                        str(SHAPE.layers), str(GROUP)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = json.loads(r.stdout.strip().splitlines()[-1])
    cfg = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**cfg, "quantization_config": QUANT_CONFIG}))
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"].update({n: "model-experts.safetensors" for n in names})
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def test_packed_int4_is_dequantized_per_group_exactly(backend_python, tmp_path):
    """The worker's own read of each MoE layer (real torch, real safetensors bytes, no kt-kernel) gives exactly
    (q - 8) * scale[r, c // 32] of the known weights, stacked [E, I, H] / [E, H, I], and bytes_in is the packed size."""
    src = kimi_int4(tmp_path / "kimi", backend_python)
    spec = {"num_experts": SHAPE.experts, "hidden_size": SHAPE.hidden, "moe_intermediate_size": SHAPE.moe_inter,
            "model_path": str(src)}
    code = f"""
import json, sys, torch
from safetensors.torch import load_file
sys.path.insert(0, {str(REPO / "kt_launch" / "backend")!r})
import convert_worker as cw
ref = load_file({str(tmp_path / "reference.safetensors")!r})
table = cw.tensor_table({str(src)!r})
assert cw.packed_group_size({str(src)!r}) == {GROUP}
for layer in range(1, {SHAPE.layers}):
    gate, up, down, n = cw.read_layer(torch, table, layer, {spec!r})
    for e in range({SHAPE.experts}):
        for proj, got in (("gate_proj", gate[e]), ("up_proj", up[e]), ("down_proj", down[e])):
            want = ref[f"model.layers.{{layer}}.mlp.experts.{{e}}.{{proj}}"]
            assert got.dtype == torch.bfloat16 and torch.equal(got, want), (layer, e, proj, (got.float() - want.float()).abs().max())
    print(json.dumps({{"layer": layer, "bytes": n}}))
"""
    r = subprocess.run([backend_python, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    per_tensor = {"gate": SHAPE.moe_inter * SHAPE.hidden, "down": SHAPE.hidden * SHAPE.moe_inter}
    want = SHAPE.experts * sum(n // 2 + n // GROUP * 2 + 8 for n in (per_tensor["gate"], per_tensor["gate"],
                                                                      per_tensor["down"]))
    for line in r.stdout.strip().splitlines():
        assert json.loads(line)["bytes"] == want  # packed nibbles, BF16 group scales, the int32 shape: read once


def test_an_asymmetric_int4_config_is_refused_by_name(backend_python, tmp_path):
    src = kimi_int4(tmp_path / "kimi", backend_python)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = False
    (src / "config.json").write_text(json.dumps(cfg))
    code = f"""
import sys
sys.path.insert(0, {str(REPO / "kt_launch" / "backend")!r})
import convert_worker as cw
try:
    cw.packed_group_size({str(src)!r})
except cw.ConvertError as e:
    print(e.kind, e.message)
"""
    r = subprocess.run([backend_python, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("weights ") and "asymmetric" in r.stdout and "config.json" in r.stdout, r.stdout


@pytest.mark.parametrize("method", ["AMXINT4", "AMXINT8"])
def test_a_kimi_int4_checkpoint_converts_and_reads_back(backend_python, kt_kernel, tmp_path, method):
    """Through the CLI: packed INT4 -> BF16 -> kt-kernel's quantizer; kt-kernel's load_weights reads the first and
    last layer back within the probe's tolerance against the dequantized source; `kt-launch check` passes."""
    if not kt_kernel.implements(method):
        pytest.skip(f"the kt-kernel variant '{kt_kernel.variant}' here has no {method} (needs AVX-512 or AMX)")
    src = kimi_int4(tmp_path / "kimi", backend_python)
    out = tmp_path / f"kimi-{method}"
    prof = profile(tmp_path, src, out, "BF16", 1, backend_python)
    r = kt("convert", "--profile", prof, "--method", method, "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["method"] == method and doc["layers"] == SHAPE.layers - 1 and doc["findings"] == []
    assert [v["layer"] for v in doc["verify"]] == [1, SHAPE.layers - 1] and all(v["passed"] for v in doc["verify"])
    assert doc["stages"]["in_flight"] == 3 and doc["peak_rss"] <= doc["ram_bound"]
    prof2 = profile(tmp_path, src, out, method, 1, backend_python)
    assert weight_errors(prof2) == []
    cp = cv.ConvertPlan(str(src), str(out), method, 1, 2, None, (1, 2), 8, 2, 256, 256)
    assert doc["bytes_out"] == 2 * cp.layer_bytes_out


def test_an_unreadable_int4_source_is_refused_before_writing(backend_python, tmp_path):
    """Through the CLI, on any CPU: the worker checks the source's format before the variant's methods and before it
    touches the output, so the answer is KT-E452 naming config.json, not "the conversion failed ... a rerun
    resumes"."""
    src = kimi_int4(tmp_path / "kimi", backend_python)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = False
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = kt("convert", "--profile", profile(tmp_path, src, out, "AMXINT4", 1, backend_python), "--json")
    assert r.returncode == 3, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    codes = [f["code"] for f in doc["findings"]]
    assert codes == ["KT-E452"], doc["findings"]
    text = json.dumps(doc["findings"])
    assert "asymmetric" in text and "config.json" in text and "rerun resumes" not in text
    assert not out.exists()
