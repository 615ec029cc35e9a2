"""Throughput of kt-launch convert's worker (kt_launch/backend/convert_worker.py, run as kt-launch runs it: one
JSON spec on stdin): a DeepSeek-V2-Lite-shaped checkpoint (26 MoE layers x 64 experts, H=2048, I=1408, real
random bf16, about 29 GB) written to BENCH_ROOT, the disk's sequential read speed with the page cache dropped,
then AMXINT8 cold, AMXINT8 again (resume: every layer skipped) and AMXINT4 cold. Results: $OUT/bench.json.
Needs torch, safetensors and kt-kernel in this python (PYTHONPATH may point at an unpacked wheel); run as root
for drop_caches. Env: BENCH_ROOT, BENCH_LAYERS, BENCH_THREADS (kt-kernel threads), CONVERT_WORKER."""
import json, os, subprocess, sys, time, shutil
OUT = os.environ.get("OUT", "/tmp/out")
HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.environ.get("CONVERT_WORKER") or os.path.join(HERE, "..", "kt_launch", "backend", "convert_worker.py")
ROOT = os.environ.get("BENCH_ROOT", "/root/convbench")
LAYERS = int(os.environ.get("BENCH_LAYERS", "26"))
E, H, I = 64, 2048, 1408
res = {"t0": time.time()}

def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

def drop():
    subprocess.run("sync", shell=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        return f"no: {e}"

def save():
    with open(os.path.join(OUT, "bench.json"), "w") as f:
        json.dump(res, f, indent=1)

res["cpu"] = sh("lscpu | grep -E 'Model name|^CPU\\(s\\)|Thread|Core|Socket|NUMA node'")
res["amx_flags"] = sh("grep -o -w 'amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\\n' ' '")
res["df"] = sh(f"mkdir -p {ROOT}; df -h {ROOT}")
res["mem"] = sh("free -g")
print(json.dumps(res, indent=1), flush=True)
import torch
from safetensors.torch import save_file
torch.set_num_threads(16)
model = os.path.join(ROOT, "model")
shutil.rmtree(ROOT, ignore_errors=True)
os.makedirs(model)
cfg = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": H,
       "moe_intermediate_size": I, "num_hidden_layers": LAYERS + 1, "first_k_dense_replace": 1,
       "n_routed_experts": E, "num_experts_per_tok": 6, "torch_dtype": "bfloat16"}
json.dump(cfg, open(os.path.join(model, "config.json"), "w"))
t = time.perf_counter(); gen_s = 0.0
g = torch.Generator().manual_seed(0)
for L in range(1, LAYERS + 1):
    t1 = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor
    def one(e):
        ge = torch.Generator().manual_seed(L * 1000 + e)
        d = {}
        for proj, shape, fan in (("gate_proj", (I, H), H), ("up_proj", (I, H), H), ("down_proj", (H, I), I)):
            a = (3.0 / fan) ** 0.5
            d[f"model.layers.{L}.mlp.experts.{e}.{proj}.weight"] = torch.empty(shape, dtype=torch.bfloat16).uniform_(-a, a, generator=ge)
        return d
    ts = {}
    with ThreadPoolExecutor(16) as pool:
        for d in pool.map(one, range(E)):
            ts.update(d)
    gen_s += time.perf_counter() - t1
    save_file(ts, os.path.join(model, f"model-{L:05d}.safetensors"))
    del ts
subprocess.run("sync", shell=True)
res["write_model_s"] = round(time.perf_counter() - t, 2); res["gen_s"] = round(gen_s, 2)
res["model_bytes"] = int(sh(f"du -sb {model}").split()[0])
res["drop_caches"] = drop()
# sequential read of the shards (what conversion reads), 64 MiB chunks, caches dropped
t = time.perf_counter(); n = 0
for f in sorted(os.listdir(model))[:8]:
    with open(os.path.join(model, f), "rb", buffering=0) as h:
        while b := h.read(64 << 20):
            n += len(b)
res["seq_read_bytes"] = n; res["seq_read_s"] = round(time.perf_counter() - t, 3)
res["seq_read_GBps"] = round(n / (time.perf_counter() - t) / 1e9, 3)
print(json.dumps(res, indent=1), flush=True); save()
threads = int(os.environ.get("BENCH_THREADS", "14"))

def convert(method, tag):
    out = os.path.join(ROOT, f"out-{method}")
    spec = {"model_path": model, "out": out, "method": method, "threadpool_count": 1, "cpuinfer": threads,
            "numa_nodes": None, "layers": list(range(1, LAYERS + 1)), "num_experts": E, "top_k": 6,
            "hidden_size": H, "moe_intermediate_size": I, "chunked_prefill_size": 64,
            "identity": {"kind": "kt-launch-convert", "method": method, "threadpool_count": 1, "num_experts": E,
                         "hidden_size": H, "moe_intermediate_size": I}, "verify": True}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, WORKER], input=json.dumps(spec),
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    ans = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {"stderr": p.stderr[-3000:]}
    ans.pop("layers_detail", None)
    rows = ans.get("layers") or []
    res[tag] = {"wall_s": round(wall, 2), "ok": ans.get("ok"), "error": ans.get("error"),
                "cpu_variant": ans.get("cpu_variant"), "bytes_in": ans.get("bytes_in"), "bytes_out": ans.get("bytes_out"),
                "seconds": ans.get("seconds"), "convert_s": ans.get("convert_s"), "read_s": ans.get("read_s"),
                "quant_s": ans.get("quant_s"), "verify": ans.get("verify"), "skipped": sum(1 for r in rows if r.get("skipped")),
                "per_layer": [[r["layer"], r.get("read_s"), r.get("quant_s"), r.get("seconds")] for r in rows[:4]],
                "stderr_tail": p.stderr[-1500:] if not ans.get("ok") else ""}
    if ans.get("bytes_in") and ans.get("convert_s"):
        res[tag]["GBps_in"] = round(ans["bytes_in"] / ans["convert_s"] / 1e9, 3)
    print(tag, json.dumps(res[tag], indent=1), flush=True); save()
    return out

res["drop_caches_2"] = drop()
o8 = convert("AMXINT8", "int8_cold")
res["rerun"] = None
convert("AMXINT8", "int8_rerun")
shutil.rmtree(o8, ignore_errors=True)
if time.time() - res["t0"] < 330:
    res["drop_caches_3"] = drop()
    convert("AMXINT4", "int4_cold")
res["total_s"] = round(time.time() - res["t0"], 1)
save(); print("done", res["total_s"], flush=True)
