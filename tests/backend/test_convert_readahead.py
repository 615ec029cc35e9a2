"""Issue 26: what keeps the disk reading while the worker's Python threads cannot run.

- The read-ahead process (convert_readahead.py, a real process over real files): it reads the layers' byte ranges in
  order, at most `ahead` bytes beyond the position the reader last gave, and ends when its stdin closes. What it read
  is counted by the kernel (/proc/PID/io `rchar`, every byte its read calls returned), not by the script.
- PatientSync with the real kt-kernel 0.7.2 of the backend venv: kt-kernel's `CPUInfer.sync` holds the GIL for the
  whole quantization of a layer; waited out patiently, a Python thread keeps running through it, and the layer's files
  are the same bytes as with the plain sync.
- The plan sizes the read-ahead from the RAM its bound leaves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kt_launch.backend import convert as cv

from backend.test_convert import REPO

SCRIPT = REPO / "kt_launch" / "backend" / "convert_readahead.py"
MiB = 1 << 20


def _files(tmp_path: Path) -> list[list]:
    """Two shards of 24 MiB and 40 MiB; steps as layer_steps gives them (the second shard read in two ranges)."""
    steps = []
    for name, size in (("a.safetensors", 24 * MiB), ("b.safetensors", 40 * MiB)):
        p = tmp_path / name
        p.write_bytes(os.urandom(size))
        steps.append((p, size))
    (a, na), (b, nb) = steps
    return [[str(a), 0, na], [str(b), 0, 16 * MiB], [str(b), 16 * MiB, nb - 16 * MiB]]


def _read_by(steps, ahead: int, positions: list[int]) -> int:
    """Run the read-ahead over `steps`, give it `positions`, close its stdin once it waits; the bytes its read calls
    returned beyond those of an idle start (the kernel's count)."""
    p = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        p.stdin.write((json.dumps({"steps": steps, "ahead": ahead}) + "\n").encode())
        p.stdin.flush()
        for pos in positions:
            p.stdin.write(f"{pos}\n".encode())
        p.stdin.flush()
        # it reads until it is `ahead` past the last position, then waits on stdin: the count before the close is
        # what the pacing allowed (read while it still runs: /proc/PID/io goes with the process)
        io = _wait_idle(p.pid)
        p.stdin.close()
        assert p.wait(timeout=30) == 0
        return io
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _wait_idle(pid: int) -> int:
    """`rchar` of `pid` once the process sleeps on its stdin (state S with the same count five polls in a row, 50 ms
    apart); what the interpreter's start reads (its own files) is below 8 MiB and is subtracted by the callers."""
    import time

    last, same, deadline = -1, 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        rchar = int(next(ln.split()[1] for ln in Path(f"/proc/{pid}/io").read_text().splitlines()
                         if ln.startswith("rchar:")))
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        same = same + 1 if rchar == last and state == "S" else 0
        if same >= 5:
            return rchar
        last = rchar
        time.sleep(0.05)
    raise AssertionError("the read-ahead process never settled")


def test_the_read_ahead_stays_within_ahead_of_the_reader(tmp_path):
    steps = _files(tmp_path)
    idle = _read_by(steps, 0, [])  # ahead 0: only the interpreter's own reads
    assert idle < 8 * MiB
    for ahead, positions, want in ((16 * MiB, [], 16 * MiB),  # before the reader begins: `ahead` bytes
                                   (16 * MiB, [8 * MiB, 24 * MiB], 40 * MiB),  # the last position + ahead
                                   (8 * MiB, [24 * MiB], 32 * MiB)):  # across the shards' boundary
        got = _read_by(steps, ahead, positions) - idle
        assert want <= got < want + MiB, (ahead, positions, got)
    # ahead of everything: it reads the whole list and ends by itself, its stdin still open
    p = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE)
    try:
        p.stdin.write((json.dumps({"steps": steps, "ahead": 1 << 40}) + "\n").encode())
        p.stdin.flush()
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()
        p.wait()
        p.stdin.close()


def test_the_read_ahead_ends_when_the_worker_does(tmp_path):
    """The worker gone (its end of the pipe closed): the read-ahead ends instead of reading on; a bad spec ends it
    at once."""
    steps = _files(tmp_path)
    p = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE)
    p.stdin.write((json.dumps({"steps": steps, "ahead": 8 * MiB}) + "\n").encode())
    p.stdin.close()
    assert p.wait(timeout=30) == 0
    bad = subprocess.run([sys.executable, str(SCRIPT)], input=b"[1, 2]\n", timeout=30)
    assert bad.returncode == 0


def test_the_plan_reads_ahead_within_the_ram_its_bound_leaves():
    from backend.test_convert import _plan

    cp = _plan(Path("/m"), Path("/o"), layers_per_process=0)
    layer = cp.layer_bytes_in
    assert cv.fit_processes(cp, None).readahead_bytes == cv.READAHEAD_LAYERS * layer
    roomy = cv.fit_processes(cp, 1 << 50)
    assert roomy.readahead_bytes == max(cv.READAHEAD_LAYERS * layer, cv.READAHEAD_MIN)
    assert roomy.spec()["readahead_bytes"] == roomy.readahead_bytes
    tight = cv.fit_processes(cp, cp.ram_bytes + layer + 5)
    assert tight.readahead_bytes == layer + 5
    assert cv.fit_processes(cp, cp.ram_bytes + layer - 1).readahead_bytes == 0  # less than a layer: none


PATIENT = r"""
import json, os, sys, tempfile, threading, time, torch
sys.path.insert(0, sys.argv[1])
import convert_worker as cw
import probe_worker as pw
pw._install_pin_shim(torch, {"notes": []})
E, H, I = 32, 1024, 1024
g = torch.Generator().manual_seed(5)
gate, up = (torch.randn((E, I, H), generator=g) / 32).to(torch.bfloat16), (torch.randn((E, I, H), generator=g) / 32).to(torch.bfloat16)
down = (torch.randn((E, H, I), generator=g) / 32).to(torch.bfloat16)
ticks, stop = [], False
def tick():
    while not stop:
        ticks.append(time.perf_counter())
        time.sleep(0.001)
threading.Thread(target=tick, daemon=True).start()
for method in sys.argv[2].split(","):
    spec = {"num_experts": E, "top_k": 2, "hidden_size": H, "moe_intermediate_size": I, "cpuinfer": 2,
            "threadpool_count": 1, "chunked_prefill_size": 64, "method": method, "numa_nodes": None}
    out, patient, rows = tempfile.mkdtemp(), cw.PatientSync(), []
    for layer in (1, 2, 3):  # 1 plain (learned from), 2 and 3 patient
        staged = os.path.join(out, f"_layer_{layer}")
        w = cw.wrapper(torch, spec, layer, out, cpu_save=True)
        patient.wrap(w, staged)
        wrapped = type(w.cpu_infer).__name__
        t0 = time.perf_counter()
        w.load_weights_from_tensors(gate, up, down, torch.arange(E, dtype=torch.int64))
        t1 = time.perf_counter()
        del w
        patient.learn(staged, t1 - t0)
        inside = [t0] + [t for t in ticks if t0 < t < t1] + [t1]
        rows.append({"layer": layer, "wrapped": wrapped, "quant_s": t1 - t0,
                     "max_gap": max(b - a for a, b in zip(inside, inside[1:]))})
    files = {layer: {os.path.relpath(os.path.join(r, f), os.path.join(out, f"_layer_{layer}")):
                     open(os.path.join(r, f), "rb").read()
                     for r, _d, fs in os.walk(os.path.join(out, f"_layer_{layer}")) for f in fs} for layer in (1, 2, 3)}
    print("RESULT " + json.dumps({"method": method, "rows": rows, "files": patient.files,
                                 "same": files[1] == files[2] == files[3], "n": len(files[2])}), flush=True)
os._exit(0)
"""


def test_a_patient_sync_frees_the_gil_and_writes_the_same_bytes(backend_python, kt_kernel, tmp_path):
    """Layer 1 with kt-kernel's plain sync: a ticking thread waits out the whole quantization (the GIL is held).
    Layers 2 and 3 through PatientSync: the thread's longest wait is a fraction of the quantization, and every file
    is byte for byte layer 1's (the same stacks quantized). AMXINT8 and AMXINT4 (their files differ), one process;
    the methods convert writes, where this CPU's kt-kernel variant has them (an AVX2 build has neither: convert
    refuses it, tests/backend/test_convert.py)."""
    methods = kt_kernel.pick(["AMXINT8", "AMXINT4"])
    if not methods:
        pytest.skip(f"kt-kernel's {kt_kernel.variant} variant has no AMXINT8 or AMXINT4")
    r = subprocess.run([backend_python, "-c", PATIENT, str(REPO / "kt_launch" / "backend"), ",".join(methods)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [json.loads(ln[7:]) for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert [got["method"] for got in results] == methods, r.stdout[-2000:]
    for got in results:
        plain, *patient = got["rows"]
        assert plain["wrapped"] != "_Patient" and all(row["wrapped"] == "_Patient" for row in patient), got
        assert got["files"] == got["n"] > 0 and got["same"], got
        assert plain["max_gap"] > 0.8 * plain["quant_s"], got  # what PatientSync is for: the GIL held throughout
        for row in patient:
            assert row["max_gap"] < 0.6 * row["quant_s"], got


WORKER_DIES = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import convert_worker as cw
table = {"model.layers.1.mlp.experts.0.gate_proj.weight": (sys.argv[2], 0, int(sys.argv[3]), "BF16", (1,))}
cw.layer_steps = lambda t, layer: [(f, a, b - a) for f, a, b, _d, _s in t.values()]
ra = cw.Readahead(table, [1], 1 << 50)
print(ra.proc.pid, flush=True)
time.sleep(600)
"""


def test_a_worker_killed_alone_takes_its_read_ahead_with_it(tmp_path):
    """The worker SIGKILLed by itself (the launcher's death signal reaches the worker, not its children): the
    read-ahead, busy reading a 64 GiB sparse file, is gone at once (its own death signal), not after reading on;
    a FIFO among the steps is not waited on."""
    import signal
    import time

    from operate.support import pid_gone

    sparse = tmp_path / "sparse.safetensors"
    with open(sparse, "wb") as f:
        f.truncate(64 << 30)
    worker = subprocess.Popen([sys.executable, "-c", WORKER_DIES, str(REPO / "kt_launch" / "backend"), str(sparse),
                               str(64 << 30)], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(worker.stdout.readline())
        time.sleep(0.3)
        assert not pid_gone(child), "the read-ahead ended before the worker died: the test shows nothing"
        worker.kill()
        worker.wait()
        deadline = time.monotonic() + 5
        while not pid_gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_gone(child)
    finally:
        worker.kill()
        worker.wait()
        if child is not None and not pid_gone(child):  # a failed run leaves nothing reading either
            os.kill(child, signal.SIGKILL)
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    p = subprocess.run([sys.executable, str(SCRIPT)], input=(json.dumps({"steps": [[str(fifo), 0, 1 << 20]],
                                                                         "ahead": 1 << 30}) + "\n").encode(),
                       timeout=30)
    assert p.returncode == 0
