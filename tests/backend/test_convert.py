"""`kt-launch convert` end to end: tiny DeepSeek-V2-shaped checkpoints with real random weights, converted by
the real kt-kernel 0.7.2 of the backend venv, read back by kt-kernel (`load_weights`) and by `kt-launch check`.

Which methods run is read from the loaded kt-kernel variant (`kt_kernel` fixture): on any AVX-512 CPU the
AMX formats convert; where the variant lacks them (AVX2) the command must refuse with KT-E402 and write
nothing. The refusals that need no kt-kernel run with an interpreter that does not exist, which proves they
come before any worker starts.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import random
import signal
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.backend import convert as cv

REPO = Path(__file__).resolve().parents[2]
SHAPE = synthetic.Shape(layers=3, experts=8, hidden=256, moe_inter=256)  # MoE layers 1 and 2
WEIGHT_CODES = {"KT-E201", *cv.WEIGHT_CHECKS}


# -- a tiny checkpoint with real weights ------------------------------------------------------------

def _bf16(n: int, scale: float, rnd: random.Random) -> bytes:
    b = array.array("f", (rnd.uniform(-scale, scale) for _ in range(n))).tobytes()
    return b"".join(b[i + 2:i + 4] for i in range(0, len(b), 4))  # the high half of a float32 is its bf16


def _fp8(n: int, rnd: random.Random) -> bytes:
    # E4M3 with exponent 5..8 (|x| in [0.25, 3.75]): never NaN (0x7f/0xff)
    return bytes((rnd.getrandbits(1) << 7) | (rnd.randint(5, 8) << 3) | rnd.getrandbits(3) for _ in range(n))


def fill_experts(root: Path, seed: int = 0) -> None:
    """Overwrite the routed-expert tensors of a synthetic checkpoint (zeros) with random values."""
    rnd = random.Random(seed)
    for shard in sorted(root.glob("*.safetensors")):
        raw = bytearray(shard.read_bytes())
        n = struct.unpack("<Q", raw[:8])[0]
        base = 8 + n
        for k, v in json.loads(raw[8:base]).items():
            if k == "__metadata__" or ".mlp.experts." not in k:
                continue
            a, b = v["data_offsets"]
            count = (b - a) // {"BF16": 2, "F8_E4M3": 1, "F32": 4}[v["dtype"]]
            if v["dtype"] == "BF16":
                data = _bf16(count, (3.0 / v["shape"][1]) ** 0.5, rnd)
            elif v["dtype"] == "F8_E4M3":
                data = _fp8(count, rnd)
            else:  # the F32 128x128 block scales of FP8 weights
                data = array.array("f", (rnd.uniform(0.02, 0.05) for _ in range(count))).tobytes()
            raw[base + a:base + b] = data
        shard.write_bytes(bytes(raw))


def model(root: Path, dtype: str = "BF16", shape: synthetic.Shape = SHAPE) -> Path:
    synthetic.hf_model(root, shape, expert_dtype=dtype)
    fill_experts(root)
    return root


def profile(tmp: Path, model_dir: Path, out: Path, method: str = "AMXINT8", pools: int = 1, python: str = "") -> Path:
    p = tmp / f"{method.lower()}-{pools}.yaml"
    py = f", python: {python}" if python else ""
    p.write_text(f"model: {{path: {model_dir}}}\nkt: {{weight_path: {out}, method: {method}, threadpool_count: {pools}, "
                 f"cpuinfer: {max(2, pools)}}}\nruntime: {{flavor: sglang-kt{py}}}\n")
    return p


def kt(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "kt_launch", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def files_state(out: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under the output: (inode, mtime_ns, sha256)."""
    state = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            st = p.stat()
            state[str(p.relative_to(out))] = (st.st_ino, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return state


def weight_errors(prof: Path) -> list[dict]:
    r = kt("check", "--profile", prof, "--json")
    doc = json.loads(r.stdout)
    return [f for f in doc["findings"] if f["level"] == "error" and f["code"] in WEIGHT_CODES]


def assert_refused_unavailable(r, out: Path, method: str) -> None:
    assert r.returncode == 3 and "KT-E402" in r.stdout + r.stderr and method in r.stdout + r.stderr, r.stderr[-2000:]
    assert not out.exists(), "a refused conversion must write nothing"


# -- real conversions -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,method,pools", [("BF16", "AMXINT8", 2), ("F8_E4M3", "AMXINT4", 1)])
def test_conversion_is_read_back_by_kt_kernel_and_passes_check(backend_python, kt_kernel, tmp_path, dtype, method,
                                                               pools):
    src = model(tmp_path / "model", dtype)
    out = tmp_path / f"model-{method}"
    prof = profile(tmp_path, src, out, method, pools, backend_python)
    before = weight_errors(prof)
    assert before and f"kt-launch convert --profile {prof}" in before[0]["fix"], before  # KT-E201's fix line
    r = kt("convert", "--profile", prof, "--json")
    if not kt_kernel.implements(method):
        assert_refused_unavailable(r, out, method)
        return
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["outputs"] == {"kt.weight_path": str(out)}
    section = (REPO / "docs" / "JSON.md").read_text().split("## `kt-launch convert --json`")[1].split("\n## ")[0]
    assert set(doc) == set(re.findall(r"^\| `(\w+)` \|", section, re.M))  # docs/JSON.md documents every field
    assert doc["layers"] == 2 and doc["skipped"] == 0 and doc["findings"] == []
    assert doc["bytes_in"] == 2 * 8 * 3 * 256 * 256 * (1 if dtype.startswith("F8") else 2) + (
        2 * 8 * 3 * 2 * 2 * 4 if dtype.startswith("F8") else 0)  # + the 2x2 f32 block scales per tensor
    cp = cv.ConvertPlan(str(src), str(out), method, pools, 2, None, (1, 2), 8, 2, 256, 256)
    assert doc["bytes_out"] == 2 * cp.layer_bytes_out  # the disk estimate is exact
    # kt-kernel's own load_weights read the first and the last layer back within the probe's tolerance
    assert [v["layer"] for v in doc["verify"]] == [1, 2]
    for v in doc["verify"]:
        assert v["passed"] and 0 < v["rel_err"] <= v["tolerance"] == (0.06 if method == "AMXINT8" else 0.35), v
    assert sorted(p.name for p in (out / "_layer_1").iterdir()) == [f"_numa_{n}" for n in range(pools)]
    assert sorted(p.name for p in out.iterdir()) == ["_layer_1", "_layer_2", cv.MANIFEST]
    assert "[1/2] layer 1: read" in r.stderr and "[2/2] layer 2: read" in r.stderr
    assert weight_errors(prof) == []  # `kt-launch check` now passes the weight checks


def test_rerun_rewrites_nothing_and_redoes_a_damaged_layer(backend_python, kt_kernel, tmp_path):
    src = model(tmp_path / "model")
    out = tmp_path / "kt"
    prof = profile(tmp_path, src, out, "AMXINT8", 1, backend_python)
    r = kt("convert", "--profile", prof)
    if not kt_kernel.implements("AMXINT8"):
        assert_refused_unavailable(r, out, "AMXINT8")
        return
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.rstrip().splitlines()[-3:] == [f"  --set kt.weight_path={out}", "  --set kt.method=AMXINT8",
                                                   "  --set kt.threadpool_count=1"]
    first = files_state(out)
    r = kt("convert", "--profile", prof, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["skipped"] == 2, r.stderr[-3000:]
    assert "already converted" in r.stderr
    assert files_state(out) == first  # same inodes, mtimes and bytes: nothing rewritten
    victim = next(p for p in sorted((out / "_layer_2").rglob("*.kt")))
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size, other bytes
    (out / cv.TMP_DIR / "_layer_9").mkdir(parents=True)  # an interrupted run's half layer
    r = kt("convert", "--profile", prof, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["skipped"] == 1, r.stderr[-3000:]
    after = files_state(out)
    assert {k: v for k, v in after.items() if k.startswith("_layer_1/")} == \
        {k: v for k, v in first.items() if k.startswith("_layer_1/")}
    redone = {k: v[2] for k, v in after.items() if k.startswith("_layer_2/")}
    assert redone == {k: v[2] for k, v in first.items() if k.startswith("_layer_2/")}  # deterministic quantizer
    assert after[str(victim.relative_to(out))][0:2] != first[str(victim.relative_to(out))][0:2]
    assert not (out / cv.TMP_DIR).exists()


def test_ctrl_c_leaves_no_half_layer_counted_and_the_rerun_resumes(backend_python, kt_kernel, tmp_path):
    if not kt_kernel.implements("AMXINT8"):
        pytest.skip(f"the {kt_kernel.variant} variant has no AMXINT8 (its refusal is tested above)")
    src = model(tmp_path / "model", shape=synthetic.Shape(layers=5, experts=8, hidden=256, moe_inter=256))
    out = tmp_path / "kt"
    prof = profile(tmp_path, src, out, "AMXINT8", 1, backend_python)
    p = subprocess.Popen([sys.executable, "-m", "kt_launch", "convert", "--profile", str(prof)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    for line in p.stderr:  # interrupt right after the first finished layer
        err.append(line)
        if line.startswith("[1/4]"):
            p.send_signal(signal.SIGINT)
            break
    rest, _ = p.communicate(timeout=120)[1], None
    assert p.returncode in (0, 130), "".join(err) + rest
    if p.returncode == 130:
        assert "the same command resumes" in rest
    manifest = json.loads((out / cv.MANIFEST).read_text())
    for layer, rec in manifest["layers"].items():  # what is counted as done is complete, byte for byte
        d = out / f"_layer_{layer}"
        assert {str(f.relative_to(d)): (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
                for f in d.rglob("*") if f.is_file()} == {k: (v["size"], v["sha256"]) for k, v in rec["files"].items()}
    r = kt("convert", "--profile", prof, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["layers"] == 4 and doc["skipped"] == len(manifest["layers"]) >= 1, r.stderr[-2000:]
    assert weight_errors(prof) == []


def test_a_variant_without_the_method_is_refused_before_writing(backend_python, tmp_path):
    """AVX2 is on every x86-64 CI machine, and its kt-kernel variant has no AMXInt8_MOE."""
    src = model(tmp_path / "model")
    out = tmp_path / "kt"
    r = kt("convert", "--profile", profile(tmp_path, src, out, "AMXINT8", 1, backend_python),
           env={"KT_KERNEL_CPU_VARIANT": "avx2"})
    assert_refused_unavailable(r, out, "AMXINT8")
    assert "avx2" in r.stdout


def fused_lora(root: Path, r: int = 8) -> Path:
    """kt SFT's raw output: fused_expert_lora.safetensors ([E, r, in] / [E, out, r] per layer) + adapter_config.json."""
    t = {}
    for layer in SHAPE.moe_layers:
        for proj, (inp, out) in (("gate", (SHAPE.hidden, SHAPE.moe_inter)), ("up", (SHAPE.hidden, SHAPE.moe_inter)),
                                 ("down", (SHAPE.moe_inter, SHAPE.hidden))):
            t[f"layers.{layer}.experts.{proj}_lora_a"] = ("BF16", (SHAPE.experts, r, inp))
            t[f"layers.{layer}.experts.{proj}_lora_b"] = ("BF16", (SHAPE.experts, out, r))
    synthetic.write_safetensors(root / cv.FUSED, t)
    synthetic.write_json(root / "adapter_config.json", {"peft_type": "LORA", "r": r, "lora_alpha": 16,
                                                        "target_modules": ["gate_proj", "up_proj", "down_proj"]})
    return root


def test_a_raw_fused_expert_lora_is_converted_beside_it_and_the_plan_accepts_it(backend_python, tmp_path):
    src = model(tmp_path / "model")
    lora = fused_lora(tmp_path / "lora")
    prof = tmp_path / "moe-lora.yaml"
    prof.write_text(f"model: {{path: {src}}}\nmoe_lora: {{path: {lora}, sft_method: AMXBF16_SFT}}\nkt: {{cpuinfer: 2}}\n"
                    f"runtime: {{flavor: sglang-kt, python: {backend_python}}}\n")
    before = [f for f in json.loads(kt("check", "--profile", prof, "--json").stdout)["findings"] if f["code"] == "KT-E210"]
    assert before and f"kt-launch convert --profile {prof}" in before[0]["fix"], before
    r = kt("convert", "--profile", prof, "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(r.stdout)
    out = tmp_path / "lora-sglang"  # the default: a sibling, never inside the checkpoint
    assert doc["outputs"] == {"moe_lora.path": str(out)} and doc["findings"] == []
    assert doc["lora"]["tensor_count"] == 2 * 8 * 3 * 2 and doc["lora"]["rank"] == 8
    assert sorted(p.name for p in out.iterdir()) == sorted(cv.ADAPTER_FILES)
    assert sorted(p.name for p in lora.iterdir()) == ["adapter_config.json", cv.FUSED]  # the source is untouched
    after = json.loads(kt("check", "--profile", prof, "--set", f"moe_lora.path={out}", "--json").stdout)
    assert not [f for f in after["findings"] if f["level"] == "error" and f["code"] in cv.OUTPUT_CHECKS], after
    r = kt("convert", "--profile", prof)  # done already: nothing rewritten
    assert r.returncode == 0 and "already converted" in r.stdout and r.stdout.rstrip().endswith(f"moe_lora.path={out}")
    r = kt("convert", "--profile", prof, "--lora-out", lora / "converted", "--python", tmp_path / "no-python")
    assert r.returncode == 3 and "KT-E420" in r.stderr and not (lora / "converted").exists()


# -- refusals before any worker starts (no kt-kernel needed) -----------------------------------------

@pytest.fixture(scope="module")
def zeros_model(tmp_path_factory) -> Path:
    return synthetic.hf_model(tmp_path_factory.mktemp("m") / "model", SHAPE)


def _refused(tmp_path, src, out, code, method="AMXINT8", extra=()):
    r = kt("convert", "--profile", profile(tmp_path, src, out, method), "--python", tmp_path / "no-such-python",
           *extra)
    assert r.returncode == 3 and code in r.stderr, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr
    return r


def test_output_inside_or_equal_to_the_model_dir_is_refused(zeros_model, tmp_path):
    before = sorted(p.name for p in zeros_model.iterdir())
    for out in (zeros_model, zeros_model / "kt-int8"):
        r = _refused(tmp_path, zeros_model, out, "KT-E420")
        assert f"--out {zeros_model}-AMXINT8" in r.stderr
    r = _refused(tmp_path, zeros_model, tmp_path / "elsewhere", "KT-E420", extra=("--out", zeros_model / "x"))
    assert sorted(p.name for p in zeros_model.iterdir()) == before


def test_an_output_dir_with_foreign_files_is_refused(zeros_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(tmp_path, zeros_model, out, "KT-E422")
    (out / "notes.txt").unlink()
    (out / "_layer_1").mkdir()  # another tool's conversion: no manifest of ours
    _refused(tmp_path, zeros_model, out, "KT-E422")
    (out / "_layer_1").rmdir()
    (out / cv.MANIFEST).write_text(json.dumps({"kind": "kt-launch-convert", "method": "AMXINT4", "threadpool_count": 1,
                                               "num_experts": 8, "hidden_size": 256, "moe_intermediate_size": 256,
                                               "layers": {}}))
    r = _refused(tmp_path, zeros_model, out, "KT-E422")  # a conversion for another method
    assert "method=AMXINT4" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [cv.MANIFEST]


def test_a_method_that_needs_no_conversion_is_refused(zeros_model, tmp_path):
    _refused(tmp_path, zeros_model, tmp_path / "out", "KT-E421", method="BF16", extra=("--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_too_little_disk_is_refused(tmp_path):
    big = synthetic.hf_model(tmp_path / "v3", synthetic.DEEPSEEK_V3, expert_dtype="F8_E4M3", sparse=True, shards=4)
    cp = cv.ConvertPlan(str(big), str(tmp_path / "out"), "AMXINT8", 1, 1, None, tuple(range(3, 61)), 256, 8, 7168,
                        2048, 1)
    need = cv.remaining_bytes(cp, None)
    assert need > 600e9  # 58 layers x 256 experts x 44 MB
    if cv.free_bytes(str(tmp_path)) >= need:
        pytest.skip("this filesystem has room for a DeepSeek-V3 conversion")
    r = _refused(tmp_path, big, tmp_path / "out", "KT-E423")
    assert "GB needed" in " ".join(r.stderr.split()) and not (tmp_path / "out").exists()  # the text wraps


def test_refusal_rules():
    cp = cv.ConvertPlan("/m/model", "/m/model-AMXINT8", "AMXINT8", 2, 2, None, (1, 2), 8, 2, 256, 256)
    assert cp.layer_bytes_out == 1_605_632  # measured: kt-kernel 0.7.2, 8 experts, H=I=256, 2 pools
    assert cv.location_refusal(cp) is None  # a sibling named like the model is not inside it
    assert cv.foreign_entries(["_layer_1", cv.MANIFEST, cv.TMP_DIR], True) == []
    assert cv.foreign_entries(["_layer_1", "x.safetensors"], False) == ["_layer_1", "x.safetensors"]
    assert cv.remaining_bytes(cp, {"layers": {"1": {}}}) == cp.layer_bytes_out
    f = cv.disk_refusal(cp, 10**9, 10**6)
    assert f is not None and f.code == "KT-E423" and cv.disk_refusal(cp, 10, 10) is None
    assert cv.parse_progress(cv.PROGRESS + '{"layer": 3}') == {"layer": 3} and cv.parse_progress("noise") is None
    line = cv.progress_line({"index": 1, "total": 4, "layer": 1, "bytes_in": 2 * 10**9, "read_s": 1.5,
                             "quant_s": 0.25, "seconds": 2.0}, 2.5)
    assert line == "[1/4] layer 1: read 2.00 GB in 1.50 s, quantized in 0.25 s, 2.00 s in all, about 8 s left"


def test_worker_client_hands_over_stderr_lines_as_they_come(tmp_path):
    from kt_launch.facts.worker import run_worker

    script = tmp_path / "w.py"
    script.write_text("import sys, json\nfor i in range(3):\n    sys.stderr.write(f'line {i}\\n'); sys.stderr.flush()\n"
                      "print(json.dumps({'ok': True}))\n")
    seen = []
    r = run_worker(sys.executable, script, stderr_line=seen.append, timeout_s=60)
    assert r.answer == {"ok": True} and seen == ["line 0", "line 1", "line 2"]


def test_fp8_blocks_are_dequantized_with_their_own_scale(backend_python):
    """Each 128x128 block (the ragged edge ones too) is multiplied by its weight_scale_inv entry: checked
    element by element against the definition, since the read-back check compares with the same dequantization."""
    code = f"""
import sys, torch
sys.path.insert(0, {str(REPO / "kt_launch" / "backend")!r})
import convert_worker as cw
g = torch.Generator().manual_seed(0)
q = (torch.rand((200, 300), generator=g) * 8 - 4).to(torch.float8_e4m3fn)
s = torch.rand((2, 3), generator=g) + 0.5
w = cw.dequant_fp8(torch, q, s)
ref = torch.empty(200, 300)
for i in range(200):
    for j in range(300):
        ref[i, j] = q[i, j].float() * s[i // 128, j // 128]
assert w.dtype == torch.bfloat16 and w.shape == (200, 300)
assert torch.equal(w, ref.to(torch.bfloat16)), (w - ref).abs().max()
print("ok")
"""
    r = subprocess.run([backend_python, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


# -- kt-kernel 0.7.2 keeps every quantized layer until its process ends: a fresh worker process each N layers -------

def _plan(src: Path, out: Path, **kw) -> cv.ConvertPlan:
    return cv.ConvertPlan(model_path=str(src), out=str(out), method="AMXINT8", threadpool_count=1, cpuinfer=2,
                          numa_nodes=None, layers=tuple(SHAPE.moe_layers), num_experts=SHAPE.experts, top_k=SHAPE.top_k,
                          hidden_size=SHAPE.hidden, moe_intermediate_size=SHAPE.moe_inter, **kw)


def test_the_layers_per_process_follow_the_ram_available():
    """The bound counts kt-kernel's buffers of every layer one process converts (plus its quantizer's scratch); the
    plan takes the most layers a process that fit the RAM available, all of them when they fit or nothing is known."""
    cp = _plan(Path("/m"), Path("/o"), layers_per_process=0)
    cp = cv.ConvertPlan(**{**cp.__dict__, "layers": tuple(range(1, 11))})
    assert cp.ram_bytes == cp.ram_for(10) == cp.ram_for(0) + 10 * cp.layer_bytes_out  # ram_for(0): the scratch
    assert cv.fit_processes(cp, None).chunk == 10 and cv.fit_processes(cp, cp.ram_for(10)).chunk == 10
    three = cv.fit_processes(cp, cp.ram_for(3) + cp.layer_bytes_out - 1)
    assert three.chunk == 3 and three.ram_bytes <= cp.ram_for(3) + cp.layer_bytes_out
    assert three.spec()["layers_per_process"] == 3 and cv.fit_processes(cp, None).spec()["layers_per_process"] == 0
    assert "a fresh worker process each 3 layers" in cv.start_line(three, "py")
    one = cv.fit_processes(cp, 1)
    assert one.chunk == 1 and cv.ram_refusal(one, 1).code == "KT-E451"


def test_a_chunked_conversion_runs_one_process_per_part_and_is_checked_whole(backend_python, kt_kernel, tmp_path):
    if not kt_kernel.implements("AMXINT8"):
        pytest.skip(f"the '{kt_kernel.variant}' variant has no AMXINT8")
    src = model(tmp_path / "model")
    cp = _plan(src, tmp_path / "kt", layers_per_process=1)
    seen = []
    r = cv.run_conversion(cp, backend_python, progress=seen.append)
    a = r.answer or {}
    assert r.ok and a.get("ok"), (a.get("error"), r.stderr_tail[-2000:])
    assert a["processes"] == len(SHAPE.moe_layers) == 2 and a["layers_per_process"] == 1
    assert [(p["index"], p["total"], p["layer"]) for p in seen] == [(1, 2, 1), (2, 2, 2)]
    assert [(v["layer"], v["passed"]) for v in a["verify"]] == [(1, True), (2, True)]
    manifest = json.loads((tmp_path / "kt" / cv.MANIFEST).read_text())
    assert sorted(manifest["layers"]) == ["1", "2"] and a["bytes_in"] == 2 * cp.layer_bytes_in_bf16
    assert 0 < a["peak_rss"] <= cp.ram_bytes and not (tmp_path / "kt" / cv.TMP_DIR).exists()
