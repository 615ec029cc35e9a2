"""The convert worker's reader stage against the disk (issue 26), on any CPU: no kt-kernel quantizer needed.

Builds a DeepSeek-V2-Lite-shaped checkpoint (BENCH_LAYERS MoE layers x 64 experts, H=2048, I=1408, random bf16, one
shard per layer: 1.11 GB a layer) under BENCH_ROOT, then, each run cold for these files (sync + posix_fadvise
DONTNEED on every shard: the page cache of these files only, no root needed, checked with fincore where present):
  1. `cat` of every shard to /dev/null: the disk's sequential read of the same bytes;
  2. the worker's Reader (convert_worker.py: preadv into the stacked tensors, the hashing thread) with a consumer that
     gives each layer back at once: the reader stage alone, GB/s and its share of `cat`;
  3. peak RSS (VmHWM: anonymous + file-backed) of a child that reads every layer with a slow consumer
     (BENCH_HOLD_S a layer, so the reader fills all IN_FLIGHT slots), for 64 and 32 experts a layer: two layer
     sizes, against the bound `kt-launch convert` prints (convert.py ConvertPlan.ram_bytes, without kt-kernel's
     quantized copy, which this bench does not make).
Run with the interpreter that has torch and safetensors (the backend venv). Prints one JSON document."""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.path.join(HERE, "..", "kt_launch", "backend")
ROOT = os.environ.get("BENCH_ROOT", "/tmp/kt-convert-bench")
LAYERS = int(os.environ.get("BENCH_LAYERS", "4"))
HOLD = float(os.environ.get("BENCH_HOLD_S", "1.0"))
E, H, I = 64, 2048, 1408

CHILD = r"""
import json, os, resource, sys, time, torch
sys.path.insert(0, sys.argv[1])
import convert_worker as cw
model, layers, experts, hold = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
torch.set_num_threads(1)
spec = {"num_experts": experts, "hidden_size": 2048, "moe_intermediate_size": 1408, "model_path": model}
base = cw.peak_rss()
t0 = time.perf_counter()
table = cw.tensor_table(model)
reader = cw.Reader(torch, table, spec, layers)
read_s = hash_s = wait_s = 0.0
n = 0
for layer in layers:
    gate, up, down, nbytes, hashed, r, w = reader.take(layer)
    read_s += r; wait_s += w; n += nbytes
    if hold:
        time.sleep(hold)
    hash_s += hashed.result()[1]
    reader.release((gate, up, down))
    del gate, up, down
reader.close()
wall = time.perf_counter() - t0
print(json.dumps({"bytes": n, "wall_s": wall, "read_s": read_s, "hash_s": hash_s, "wait_s": wait_s,
                  "gb_s": n / wall / 1e9, "rss_at_start": base,
                  "peak_rss": cw.peak_rss()}))
"""


def cold(files):
    """Evict these files' pages from the page cache (clean pages: after sync). Returns the cached bytes left."""
    os.sync()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if shutil.which("fincore"):
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", *files], capture_output=True, text=True).stdout
        return sum(int(x) for x in out.split() if x.isdigit())
    return None


def build(model):
    import torch
    from safetensors.torch import save_file

    os.makedirs(model, exist_ok=True)
    json.dump({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": H,
               "moe_intermediate_size": I, "num_hidden_layers": LAYERS + 1, "first_k_dense_replace": 1,
               "n_routed_experts": E, "num_experts_per_tok": 6, "torch_dtype": "bfloat16"},
              open(os.path.join(model, "config.json"), "w"))
    for L in range(1, LAYERS + 1):
        path = os.path.join(model, f"model-{L:05d}.safetensors")
        if os.path.exists(path):
            continue
        g = torch.Generator().manual_seed(L)
        d = {}
        for e in range(E):
            for proj, shape in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
                d[f"model.layers.{L}.mlp.experts.{e}.{proj}.weight"] = torch.randn(shape, generator=g).to(torch.bfloat16)
        save_file(d, path)
        del d


def child(model, layers, experts, hold):
    r = subprocess.run([sys.executable, "-c", CHILD, BACKEND, model, json.dumps(layers), str(experts), str(hold)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    sys.path.insert(0, os.path.join(HERE, ".."))
    model = os.path.join(ROOT, "model")
    build(model)
    shards = sorted(os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors"))
    layers = list(range(1, LAYERS + 1))
    size = sum(os.path.getsize(f) for f in shards)
    res = {"cpu": subprocess.run(["sh", "-c", "lscpu | grep -E 'Model name|^CPU\\(s\\)|Flags' | cut -c1-200"],
                                 capture_output=True, text=True).stdout.strip(),
           "layers": LAYERS, "shard_bytes": size, "runs": []}
    for rnd in range(int(os.environ.get("BENCH_ROUNDS", "2"))):
        left = cold(shards)
        t0 = time.perf_counter()
        subprocess.run(["cat", *shards], stdout=subprocess.DEVNULL, check=True)
        cat_s = time.perf_counter() - t0
        left2 = cold(shards)
        rd = child(model, layers, E, 0.0)
        res["runs"].append({"round": rnd, "cached_before_cat": left, "cached_before_reader": left2,
                            "cat_s": round(cat_s, 3), "cat_gb_s": round(size / cat_s / 1e9, 3),
                            "reader": {k: round(v, 3) if isinstance(v, float) else v for k, v in rd.items()},
                            "reader_share_of_cat": round(rd["gb_s"] / (size / cat_s / 1e9), 3)})
        print(json.dumps(res["runs"][-1]), file=sys.stderr, flush=True)
    from kt_launch.backend.convert import LAYERS_IN_FLIGHT, WORKER_BASE_RAM

    res["rss"] = []
    for experts in (E, E // 2):
        layer_bf16 = experts * 3 * H * I * 2
        cold(shards)
        rd = child(model, layers, experts, HOLD)
        bound = LAYERS_IN_FLIGHT * layer_bf16 + WORKER_BASE_RAM  # ram_bytes less kt-kernel's quantized copy
        res["rss"].append({"experts": experts, "layer_bf16_bytes": layer_bf16, "hold_s": HOLD,
                           "peak_rss": rd["peak_rss"], "rss_at_start": rd["rss_at_start"],
                           "peak_minus_start": rd["peak_rss"] - rd["rss_at_start"],
                           "in_flight_layers_seen": round((rd["peak_rss"] - rd["rss_at_start"]) / layer_bf16, 2),
                           "bound_without_quantized_copy": bound, "within": rd["peak_rss"] <= bound})
        print(json.dumps(res["rss"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
