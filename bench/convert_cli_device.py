"""Issue 26's "Done when", through the CLI: `kt-launch convert` AMXINT8 and AMXINT4, cold, side by side with the
same disk's sequential read (`cat`) of the same shards, with the peak RSS of the command's whole process tree.

1. A DeepSeek-V2-Lite-sized checkpoint (BENCH_LAYERS MoE layers x 64 experts, hidden 2048, moe_intermediate 1408,
   BF16, one shard per layer, about 1.1 GB a layer): config.json of the published model, one safetensors shard per
   layer holding that layer's routed experts. The values are sane BF16 (uniform, std 1/sqrt(fan_in)), drawn once
   into a pool one layer plus 64 MiB long; layer L's bytes are the pool shifted by L x 2 MiB, so no two shards are
   equal. Written with large os.write calls, then synced.
2. Page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`, as root), `cat` of every shard to /dev/null.
3. Dropped again, `kt-launch convert --method AMXINT8 --json` (a profile with the model and --out); the process
   tree's RSS (psutil: rss = anonymous + file-backed + shmem of every process) polled every 20 ms, its maximum
   kept; the worker reports its own VmHWM. Then the output removed, dropped, AMXINT4 the same way.
   Before the conversions (BENCH_READER=1, the default), the worker's reader stage alone, cold: its Reader over
   every layer with a consumer that only waits for the source hash (no quantizer): the reader's own ceiling.
4. `cat` again at the end (the disk's figure before and after).

Run as root on the AMX host. Env: BENCH_ROOT (default /root/convbench), BENCH_LAYERS (26), BENCH_E/H/I (64, 2048,
1408: smaller only for a local dry run), BENCH_CPUINFER (kt-kernel threads, default cores - 4), BENCH_PYTHON (the
target interpreter, default this one), BENCH_METHODS (AMXINT8,AMXINT4), BENCH_CHUNK (also the last method through the worker with a fresh process each N layers, as the CLI runs it when
the RAM available holds fewer layers), BENCH_KEEP (a method whose output is kept, e.g. for bench/placement_gain.py), OUT (results: convert_cli.json).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

OUT = os.environ.get("OUT", "/tmp/out")
ROOT = os.environ.get("BENCH_ROOT", "/root/convbench")
LAYERS = int(os.environ.get("BENCH_LAYERS", "26"))
E, H, I = (int(os.environ.get(k, d)) for k, d in (("BENCH_E", "64"), ("BENCH_H", "2048"), ("BENCH_I", "1408")))
PY = os.environ.get("BENCH_PYTHON", sys.executable)
CPUINFER = int(os.environ.get("BENCH_CPUINFER", str(max(2, (os.cpu_count() or 4) - 4))))
METHODS = os.environ.get("BENCH_METHODS", "AMXINT8,AMXINT4").split(",")
res: dict = {"t0": time.time(), "layers": LAYERS, "shape": {"E": E, "H": H, "I": I}, "cpuinfer": CPUINFER}


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def save() -> None:
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "convert_cli.json"), "w") as f:
        json.dump(res, f, indent=1)


def drop() -> bool | str:
    os.sync()
    if os.environ.get("BENCH_NO_DROP") == "1":  # a shared machine: only this checkpoint's pages are evicted
        for root, _dirs, files in os.walk(ROOT):
            for name in files:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        return "posix_fadvise DONTNEED of the checkpoint's files (BENCH_NO_DROP)"
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        return f"no: {e}"


def config() -> dict:
    return {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": H,
            "intermediate_size": 10944, "moe_intermediate_size": I, "num_hidden_layers": LAYERS + 1,
            "first_k_dense_replace": 1, "moe_layer_freq": 1, "n_routed_experts": E, "n_shared_experts": 2,
            "num_experts_per_tok": 6, "num_attention_heads": 16, "num_key_value_heads": 16, "q_lora_rank": None,
            "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
            "vocab_size": 102400, "max_position_embeddings": 163840, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "topk_method": "greedy"}


def generate(model: str) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 4)
    os.makedirs(model)
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump(config(), f)
    t = time.perf_counter()
    per = {"gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
    n_layer = E * 3 * I * H * 2
    shift = 2 << 20
    pool = torch.empty((n_layer + LAYERS * shift) // 2, dtype=torch.float32)
    a = (3.0 / H) ** 0.5
    pool.uniform_(-a, a)
    pool = pool.to(torch.bfloat16).view(torch.uint8).numpy()  # the down projections get fan-in H's scale: sane
    res["gen_s"] = round(time.perf_counter() - t, 2)
    weight_map = {}

    def write(L: int) -> None:
        header, off = {}, 0
        for e in range(E):
            for proj, shape in per.items():
                n = shape[0] * shape[1] * 2
                header[f"model.layers.{L}.mlp.experts.{e}.{proj}.weight"] = {
                    "dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
                off += n
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        name = f"model-{L:05d}-of-{LAYERS:05d}.safetensors"
        fd = os.open(os.path.join(model, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, len(hb).to_bytes(8, "little") + hb)
            view = memoryview(pool)[(L - 1) * shift:(L - 1) * shift + off]
            while view:
                view = view[os.write(fd, view[:1 << 30]):]
        finally:
            os.close(fd)
        for k in header:
            weight_map[k] = name

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(write, range(1, LAYERS + 1)))
    with open(os.path.join(model, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, f)
    os.sync()
    res["write_model_s"] = round(time.perf_counter() - t, 2)


def reader_only(model: str) -> dict:
    """The worker's reader stage alone, cold (in the target interpreter): convert_worker.Reader over every layer with
    a consumer that waits for each layer's source hash and gives the stacks back at once (no quantizer)."""
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kt_launch", "backend"))
    import convert_worker as cw

    spec = {"num_experts": E, "hidden_size": H, "moe_intermediate_size": I, "model_path": model}
    layers = list(range(1, LAYERS + 1))
    t = time.perf_counter()
    table = cw.tensor_table(model)
    reader = cw.Reader(torch, table, spec, layers)
    read_s = hash_s = wait_s = 0.0
    n = 0
    for layer in layers:
        gate, up, down, nb, hashed, r_s, w_s = reader.take(layer)
        _digest, h_s = hashed.result()
        read_s, hash_s, wait_s, n = read_s + r_s, hash_s + h_s, wait_s + w_s, n + nb
        reader.release((gate, up, down))
        del gate, up, down
    reader.close()
    wall = time.perf_counter() - t
    return {"bytes": n, "wall_s": round(wall, 3), "GBps": round(n / wall / 1e9, 3), "read_s": round(read_s, 3),
            "hash_s": round(hash_s, 3), "wait_s": round(wait_s, 3)}


def shards(model: str) -> list[str]:
    return sorted(os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors"))


def cat(model: str, tag: str) -> None:
    res[f"drop_{tag}"] = drop()
    files = shards(model)
    n = sum(os.path.getsize(f) for f in files)
    t = time.perf_counter()
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
    s = time.perf_counter() - t
    res[tag] = {"bytes": n, "s": round(s, 3), "GBps": round(n / s / 1e9, 3)}
    print(tag, res[tag], flush=True)
    save()


class TreeRss:
    """Max over time of the summed RSS (anonymous + file-backed + shmem, as /proc counts it) of a process and its
    descendants, polled every 20 ms."""

    def __init__(self, pid: int):
        import psutil

        self.root, self.peak, self.peak_procs, self.stop = psutil.Process(pid), 0, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psutil

        while not self.stop:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            time.sleep(0.02)

    def done(self) -> int:
        self.stop = True
        self.thread.join()
        return self.peak


def convert(model: str, method: str) -> None:
    out = os.path.join(ROOT, f"out-{method}")
    shutil.rmtree(out, ignore_errors=True)
    prof = os.path.join(ROOT, f"{method}.yaml")
    with open(prof, "w") as f:
        f.write(f"model: {{path: {model}}}\nkt: {{weight_path: {out}, method: {method}, threadpool_count: 1, "
                f"cpuinfer: {CPUINFER}}}\nruntime: {{flavor: sglang-kt, python: {PY}}}\n")
    res[f"drop_{method}"] = drop()
    argv = [sys.executable, "-m", "kt_launch", "convert", "--profile", prof, "--method", method, "--json"]
    t = time.perf_counter()
    # PYTHONSAFEPATH: `-m kt_launch` must not take the package from the current dir (the device runs in another
    # checkout; PYTHONPATH names the one to measure)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONSAFEPATH": "1"})
    rss = TreeRss(p.pid)
    stdout, stderr = p.communicate()
    wall = time.perf_counter() - t
    peak = rss.done()
    try:
        doc = json.loads(stdout)
    except ValueError:
        doc = {"stdout_tail": stdout[-2000:]}
    r = {"exit": p.returncode, "cli_wall_s": round(wall, 3), "tree_peak_rss": peak, "tree_procs": rss.peak_procs,
         "start_line": next((ln for ln in stderr.splitlines() if ln.startswith("converting ")), None),
         **{k: doc.get(k) for k in ("layers", "skipped", "bytes_in", "bytes_out", "seconds", "convert_s", "read_s",
                                    "wait_s", "quant_s", "hash_s", "finish_s", "stages", "ram_bound", "peak_rss",
                                    "peak_rss_with_verify", "verify", "cpu_variant", "kt_kernel_version", "import_s",
                                    "verify_s", "processes", "layers_per_process", "launcher_s",
                                    "readahead_bytes")}}
    if doc.get("findings"):
        r["findings"] = doc["findings"]
    if p.returncode:
        r["stderr_tail"] = stderr[-3000:]
    if r.get("bytes_in"):
        r["GBps_cli_wall"] = round(r["bytes_in"] / wall / 1e9, 3)
        if (r.get("stages") or {}).get("wall_s"):
            r["GBps_convert_stage"] = round(r["bytes_in"] / r["stages"]["wall_s"] / 1e9, 3)
    res[method] = r
    print(method, json.dumps({k: v for k, v in r.items() if k not in ("verify", "stderr_tail")}), flush=True)
    if p.returncode:
        print(stderr[-3000:], flush=True)
    save()
    if method != os.environ.get("BENCH_KEEP"):  # BENCH_KEEP=AMXINT8: its output stays for bench/placement_gain.py
        shutil.rmtree(out, ignore_errors=True)


def chunked(model: str, method: str, k: int) -> None:
    """The worker as the CLI runs it when the RAM available holds fewer layers than the model has: a fresh process each
    `k` layers (kt-kernel 0.7.2 frees no quantized layer before its process ends); spec as ConvertPlan.spec builds it,
    the tree's peak RSS polled like the CLI's."""
    out = os.path.join(ROOT, f"out-{method}-chunk{k}")
    shutil.rmtree(out, ignore_errors=True)
    spec = {"model_path": model, "out": out, "method": method, "threadpool_count": 1, "cpuinfer": CPUINFER,
            "numa_nodes": None, "layers": list(range(1, LAYERS + 1)), "num_experts": E, "top_k": 6, "hidden_size": H,
            "moe_intermediate_size": I, "chunked_prefill_size": 8192, "verify": True, "sources": {}, "redo": [],
            "identity": {"kind": "kt-launch-convert", "method": method, "threadpool_count": 1, "num_experts": E,
                         "hidden_size": H, "moe_intermediate_size": I}, "layers_per_process": k}
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kt_launch", "backend", "convert_worker.py")
    tag = f"{method}_chunk{k}"
    res[f"drop_{tag}"] = drop()
    t = time.perf_counter()
    p = subprocess.Popen([PY, worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rss = TreeRss(p.pid)
    stdout, _ = p.communicate(json.dumps(spec))
    wall = time.perf_counter() - t
    a = json.loads(stdout.strip().splitlines()[-1])
    res[tag] = {"ok": a.get("ok"), "error": a.get("error"), "wall_s": round(wall, 3), "tree_peak_rss": rss.done(),
                **{k2: a.get(k2) for k2 in ("processes", "layers_per_process", "peak_rss", "peak_rss_with_verify",
                                            "bytes_in", "stages", "import_s", "verify_s", "seconds")},
                "verify": [(v["layer"], round(v["rel_err"], 4), v["passed"]) for v in a.get("verify") or []]}
    if a.get("bytes_in"):
        res[tag]["GBps_wall"] = round(a["bytes_in"] / wall / 1e9, 3)
    print(tag, json.dumps(res[tag]), flush=True)
    save()
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    res["cpu"] = sh("lscpu | grep -E 'Model name|^CPU\\(s\\)|Thread|Core|Socket|NUMA node'")
    res["amx_flags"] = sh("grep -o -w 'amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\\n' ' '")
    res["disk"] = sh(f"mkdir -p {ROOT}; df -h {ROOT}; lsblk -d -o NAME,SIZE,ROTA,MODEL 2>/dev/null")
    res["mem"] = sh("free -g")
    print(json.dumps(res, indent=1), flush=True)
    model = os.path.join(ROOT, "model")
    if os.environ.get("BENCH_KEEP_MODEL") != "1" or not os.path.isdir(model):
        shutil.rmtree(ROOT, ignore_errors=True)
        os.makedirs(ROOT)
        gen = subprocess.run([PY, os.path.abspath(__file__), "--generate", model], capture_output=True, text=True)
        if gen.returncode:
            raise SystemExit(f"generating the checkpoint failed: {gen.stderr[-3000:]}")
        res.update(json.loads(gen.stdout.strip().splitlines()[-1]))
    res["model_bytes"] = sum(os.path.getsize(f) for f in shards(model))
    print("model", res["model_bytes"], res.get("gen_s"), res.get("write_model_s"), flush=True)
    save()
    cat(model, "cat_before")
    if os.environ.get("BENCH_READER", "1") == "1":
        res["drop_reader"] = drop()
        rd = subprocess.run([PY, os.path.abspath(__file__), "--reader", model], capture_output=True, text=True)
        res["reader_only"] = (json.loads(rd.stdout.strip().splitlines()[-1]) if rd.returncode == 0 else
                              {"error": rd.stderr[-2000:]})
        print("reader_only", res["reader_only"], flush=True)
        save()
    for method in METHODS:
        convert(model, method)
    if os.environ.get("BENCH_CHUNK"):
        chunked(model, METHODS[-1], int(os.environ["BENCH_CHUNK"]))
    cat(model, "cat_after")
    disk = min(res["cat_before"]["GBps"], res["cat_after"]["GBps"]), max(res["cat_before"]["GBps"],
                                                                             res["cat_after"]["GBps"])
    for method in METHODS:
        r = res.get(method) or {}
        if r.get("GBps_cli_wall"):
            r["share_of_cat"] = [round(r["GBps_cli_wall"] / d, 3) for d in disk]
    res["total_s"] = round(time.time() - res["t0"], 1)
    save()
    print("summary", json.dumps({"cat": [res["cat_before"], res["cat_after"]],
                                 **{m: {k: (res.get(m) or {}).get(k) for k in (
                                     "exit", "cli_wall_s", "GBps_cli_wall", "GBps_convert_stage", "share_of_cat",
                                     "tree_peak_rss", "peak_rss", "ram_bound")} for m in METHODS}}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        print(json.dumps(reader_only(sys.argv[2])))
    elif sys.argv[1:2] == ["--generate"]:  # in the target interpreter (torch draws the pool on every core)
        generate(sys.argv[2])
        print(json.dumps({k: res[k] for k in ("gen_s", "write_model_s")}))
    else:
        main()
