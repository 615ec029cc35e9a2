"""The convert worker's reader (issue 26): the RAM it holds is the bound `kt-launch convert` prints.

Real torch and safetensors of the backend venv, no kt-kernel (runs on any CPU, any KT_KERNEL_CPU_VARIANT): a
checkpoint of 4 MoE layers of 37.7 MB BF16 experts is read by the worker's Reader while a slow consumer holds each
layer until the reader has filled every slot it has (waited for, not timed); the child's peak RSS as the OS counts it
(VmHWM) grows by at most IN_FLIGHT layers (the bytes it hands over are checked against the shards in
test_convert_source.py).
"""

from __future__ import annotations

import json
import subprocess

from kt_launch.backend import convert as cv

from backend.test_convert import REPO

E, H, I, LAYERS = 8, 1024, 768, 4

CHILD = r"""
import json, os, sys, time, torch
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[1])
import convert_worker as cw
root, E, H, I, L = sys.argv[2], *map(int, sys.argv[3:7])
os.makedirs(root, exist_ok=True)
g = torch.Generator().manual_seed(3)
for layer in range(1, L + 1):
    d = {f"model.layers.{layer}.mlp.experts.{e}.{p}.weight": torch.randn(s, generator=g).to(torch.bfloat16)
         for e in range(E) for p, s in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I)))}
    save_file(d, f"{root}/model-{layer:05d}.safetensors")
    del d
spec = {"num_experts": E, "hidden_size": H, "moe_intermediate_size": I, "model_path": root}
assert cw.IN_FLIGHT == int(sys.argv[7])
import gc; gc.collect()
try:  # the high-water mark from here (writing the shards above raised it, by an amount that depends on the allocator)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
start = cw.peak_rss()
reader = cw.Reader(torch, cw.tensor_table(root), spec, list(range(1, L + 1)))
for layer in range(1, L + 1):
    gate, up, down, n, hashed, read_s, wait_s = reader.take(layer)
    # a slow quantizer: the reader runs ahead until its slots are taken. Waited for (not a fixed sleep, which a
    # loaded machine outran: the peak then depended on timing), with a deadline so a broken reader cannot hang
    ahead, deadline = min(cw.IN_FLIGHT - 1, L - layer), time.monotonic() + 120
    while reader.ready.qsize() < ahead and reader.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.ready.qsize() >= ahead, ("the reader did not run ahead", layer, reader.ready.qsize())
    hashed.result()
    reader.release((gate, up, down))
    del gate, up, down
reader.close()
print(json.dumps({"start": start, "peak": cw.peak_rss()}))
"""


def test_the_reader_holds_at_most_the_printed_bound(backend_python, tmp_path):
    r = subprocess.run([backend_python, "-c", CHILD, str(REPO / "kt_launch" / "backend"), str(tmp_path / "m"),
                        str(E), str(H), str(I), str(LAYERS), str(cv.LAYERS_IN_FLIGHT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    layer = E * 3 * H * I * 2
    grew = got["peak"] - got["start"]
    # the reader ran ahead of the slow consumer (more than one layer held), and never past its slots (16 MB slack:
    # torch's allocator and the staging of nothing, BF16 lands in place)
    assert 2 * layer <= grew <= cv.LAYERS_IN_FLIGHT * layer + (16 << 20), (grew / layer, got)
    cp = cv.ConvertPlan("/m", "/o", "AMXINT8", 1, 1, None, tuple(range(1, LAYERS + 1)), E, 2, H, I)
    assert got["peak"] <= cp.ram_bytes  # the bound the launcher prints, interpreter included
