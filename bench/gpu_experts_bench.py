#!/usr/bin/env python3
"""What `kt.num_gpu_experts` buys: one DeepSeek-V2-Lite MoE layer, CPU (kt-kernel) + GPU (torch) experts.

Issue 11 ("What the fit buys, measured on the AMX device"). One routed-expert layer (64 experts, top-6,
hidden 2048, moe_intermediate 1408, bf16 activations), built for each GPU-expert count as sglang-kt 0.7.2
builds it, timed for decode (qlen 1) and prefill (qlen = chunk):

- Mask. sglang-kt's default `--kt-expert-placement-strategy` is "uniform" (sglang/srt/server_args.py:889);
  `_init_kt_gpu_experts_masks` (sglang/srt/layers/moe/kt_ep_wrapper.py:4510) multiplies the per-layer
  `--kt-num-gpu-experts` by the MoE layers (:4605-4613) and `generate_uniform_masks` (:4411-4458) marks the
  first n experts of every MoE layer: `masks[layer, :n] = True` (:4450). So GPU experts = 0..n-1 here.
- CPU side. `KTEPWrapperMethod.create_weights` (kt_ep_wrapper.py:5311-5370) builds
  `KTMoEWrapper(layer_idx, num_experts, num_experts_per_tok, hidden_size, moe_intermediate_size,
  gpu_experts_mask, cpuinfer_threads, threadpool_count, numa_nodes, weight_path, chunked_prefill_size,
  swiglu_limit=0, swiglu_alpha=0, method, max_deferred_experts_per_token=0)` (deferral off by default,
  :5243, server_args.py:885). kt-kernel skips masked experts in C++: the mask's pointer goes into
  MOEConfig (kt_kernel/utils/amx.py:403-409). Weights: synthetic bf16, quantized online by
  `load_weights_from_tensors` (amx.py:381-430; same forward kernels as pre-quantized .kt files).
- GPU side. sglang-kt remaps routed ids with `mask_and_remap_expert_ids` (kt_ep_wrapper.py:4817; CPU experts
  -> -1, GPU experts -> 0..n-1) and hands them to its GPU MoE method; with n == 0 it skips the GPU MoE and
  starts from zeros (:5962-5966). Here the GPU MoE is a grouped bf16 matmul: tokens sorted by GPU expert,
  `torch._grouped_mm` for gate_up (w13) and down (w2), SiLU-and-mul between, weighted scatter-add; no host
  synchronisation (as SGLang's fused Triton MoE). `--gpu-impl loop` runs one matmul pair per expert instead.
- Overlap, as `KTEPWrapperMethod.apply` (kt_ep_wrapper.py:5887-6008): copy x into a staging buffer on the
  main stream; the CPU stream waits for it and submits the CPU experts (`submit_forward` with the CPU
  stream, :5522-5541); the GPU experts run on the main stream; `sync_forward` on the CPU stream (:5543),
  an event, the main stream waits, output = gpu + cpu.

Timed per count: `layer` (that overlap), `cpu_only` (staging + submit + sync alone) and `gpu_only`
(remap + grouped MLP alone); wall time from issue to `torch.cuda.synchronize()`, median over repeats
after warm-up. Routing: uniform random top-k with a fixed seed, the same for every count; decode cycles
through `--decode-repeats` distinct single-token routings so the CPU/GPU split is the expected one.
Every count is checked against a float32 reference of the whole layer (the mask must partition the
experts: CPU + GPU = all).

    python bench/gpu_experts_bench.py --out results.json        # on the device (CUDA + AMX)
    python bench/gpu_experts_bench.py --tiny --out /tmp/x.json  # logic smoke test, runs without CUDA
    python bench/gpu_experts_bench.py --report tests/data/gpu_experts_h200_xeon16.json  # the table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

DSV2_LITE = dict(num_experts=64, top_k=6, hidden_size=2048, moe_intermediate_size=1408)
TINY = dict(num_experts=8, top_k=2, hidden_size=256, moe_intermediate_size=256)


def host_facts(torch) -> dict:
    facts = {"python": sys.version.split()[0], "platform": platform.platform(), "nproc": os.cpu_count()}
    try:
        ls = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        kv = dict((a.strip(), b.strip()) for a, b in (l.split(":", 1) for l in ls.splitlines() if ":" in l))
        facts["lscpu"] = {k: kv.get(k) for k in ("Model name", "CPU family", "Model", "Socket(s)",
                                                 "Core(s) per socket", "Thread(s) per core", "NUMA node(s)",
                                                 "L2 cache", "L3 cache", "Hypervisor vendor")}
        flags = kv.get("Flags", "").split()
        facts["isa_flags"] = [f for f in flags if f.startswith(("amx", "avx512", "avx2", "avx_vnni"))]
    except Exception as e:  # noqa: BLE001
        facts["lscpu_error"] = f"{type(e).__name__}: {e}"
    facts["torch"] = torch.__version__
    facts["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": p.name, "total_memory_bytes": p.total_memory, "sm_count": p.multi_processor_count}
    return facts


def median(xs):
    return statistics.median(xs) if xs else None


def report(path: str) -> str:
    """Markdown table from a recorded file: one run's JSON or {"runs": [...]} of several, samples pooled."""
    with open(path) as f:
        data = json.load(f)
    runs = data.get("runs") or [data]
    counts = runs[0]["counts"]

    def pooled(phase, n, mode):
        ts = [t for r in runs for t in r["results"].get(phase, {}).get(str(n), {}).get(mode, {}).get("times_ms", [])]
        per_run = [r["results"].get(phase, {}).get(str(n), {}).get(mode, {}).get("median_ms") for r in runs]
        return (median(ts) if ts else None), per_run

    def fmt(v, nd=3):
        return "–" if v is None else f"{v:.{nd}f}"

    def runs_txt(xs):
        return " / ".join(fmt(x, 2) for x in xs)

    qlen = runs[0]["prefill_qlen"]
    lines = [f"| GPU experts per layer | routed pairs on GPU | decode layer ms, CUDA graph (runs) | decode speed-up vs 0 "
             f"| decode layer ms, eager | prefill {qlen} layer ms (runs) | prefill speed-up vs 0 "
             f"| prefill CPU-only / GPU-only ms |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base_d, _ = pooled("decode_graph", 0, "layer")
    base_p, _ = pooled("prefill", 0, "layer")
    for n in counts:
        d, d_runs = pooled("decode_graph", n, "layer")
        de, _ = pooled("decode", n, "layer")
        p_, p_runs = pooled("prefill", n, "layer")
        pc, _ = pooled("prefill", n, "cpu_only")
        pg, _ = pooled("prefill", n, "gpu_only")
        share = runs[0]["results"]["prefill"][str(n)]["routed_to_gpu_share"]
        lines.append(f"| {n} | {share:.0%} | {fmt(d)} ({runs_txt(d_runs)}) | {fmt(base_d / d if d else None, 2)}× "
                     f"| {fmt(de)} | {fmt(p_, 1)} ({runs_txt(p_runs)}) | {fmt(base_p / p_ if p_ else None, 2)}× "
                     f"| {fmt(pc, 1)} / {fmt(pg, 2)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="0,8,16,32,48,64", help="GPU experts per layer to measure")
    ap.add_argument("--threads", type=int, default=14, help="cpuinfer_threads (kt-kernel)")
    ap.add_argument("--method", default="AMXINT8")
    ap.add_argument("--prefill-qlen", type=int, default=4096, help="= chunked_prefill_size")
    ap.add_argument("--decode-repeats", type=int, default=200)
    ap.add_argument("--decode-warmup", type=int, default=20)
    ap.add_argument("--prefill-repeats", type=int, default=30)
    ap.add_argument("--prefill-warmup", type=int, default=3)
    ap.add_argument("--gpu-impl", choices=("grouped", "loop"), default="grouped")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tiny", action="store_true", help="small shape, for a logic smoke test")
    ap.add_argument("--out", help="write the raw results (JSON) here")
    ap.add_argument("--report", metavar="JSON", help="print the BENCHMARKS.md table of a recorded file and exit")
    args = ap.parse_args()
    if args.report:
        print(report(args.report))
        return 0
    if not args.out:
        ap.error("--out is required (or --report)")

    import torch

    t_start = time.perf_counter()
    shape = dict(TINY if args.tiny else DSV2_LITE)
    E, K, H, I = shape["num_experts"], shape["top_k"], shape["hidden_size"], shape["moe_intermediate_size"]
    counts = [c for c in (int(x) for x in args.counts.split(",")) if c <= E]
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    res: dict = {"format": "gpu-experts-bench/1", "shape": shape, "counts": counts, "method": args.method,
                 "cpuinfer_threads": args.threads, "threadpool_count": 1, "prefill_qlen": args.prefill_qlen,
                 "seed": args.seed, "gpu_impl": args.gpu_impl, "host": host_facts(torch), "notes": [],
                 "results": {}}

    def save():
        res["wall_s"] = round(time.perf_counter() - t_start, 1)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    if not cuda:  # smoke test only: kt-kernel pins its staging buffers, which needs an accelerator
        os.environ["KT_FORCE_SYNC_SUBMIT"] = "1"
        for name in ("zeros", "empty", "full", "ones"):
            fn = getattr(torch, name)
            setattr(torch, name, (lambda fn: lambda *a, **k: fn(*a, **{**k, "pin_memory": False}))(fn))
        res["notes"].append("no CUDA: synchronous kt-kernel path, GPU side on the CPU (smoke test, not a measurement)")

    import kt_kernel
    from kt_kernel import KTMoEWrapper
    from kt_kernel.experts_base import KExpertsCPUBuffer

    KExpertsCPUBuffer.capture_bs = [1]  # persistent pinned buffers for bsz 1, as for SGLang's graph batch sizes

    res["kt_kernel"] = {"version": getattr(kt_kernel, "__version__", "?"),
                        "cpu_variant": getattr(kt_kernel, "__cpu_variant__", "?")}
    print(json.dumps(res["host"]), flush=True)
    print(f"kt_kernel {res['kt_kernel']}", flush=True)

    # ---- weights (shared by every count; generated on the GPU for speed) -------------------------
    g = torch.Generator(device=dev).manual_seed(args.seed)

    def u(shape_, fan_in):
        a = (3.0 / fan_in) ** 0.5
        return torch.empty(shape_, dtype=torch.bfloat16, device=dev).uniform_(-a, a, generator=g)

    gate_d, up_d, down_d = u((E, I, H), H), u((E, I, H), H), u((E, H, I), I)
    w13_d = torch.cat([gate_d, up_d], dim=1).contiguous()  # [E, 2I, H]: SGLang's w13 layout
    w2_d = down_d  # [E, H, I]
    gate, up, down = gate_d.cpu(), up_d.cpu(), down_d.cpu()
    del gate_d, up_d

    # ---- routing (uniform top-k, fixed seed, identical for every count) --------------------------
    gr = torch.Generator(device="cpu").manual_seed(args.seed + 1)

    def routing(qlen):
        ids = torch.topk(torch.rand((qlen, E), generator=gr), K, dim=-1).indices.to(torch.int32)
        w = torch.softmax(torch.randn((qlen, K), generator=gr), dim=-1).float()
        x = (torch.randn((qlen, H), generator=gr)).to(torch.bfloat16)
        return x.to(dev), ids.to(dev), w.to(dev)

    decode_inputs = [routing(1) for _ in range(args.decode_repeats)]
    prefill_input = routing(args.prefill_qlen)
    check_input = routing(min(256, args.prefill_qlen))

    def reference(x, ids, w):
        x32, out = x.float(), torch.zeros((x.shape[0], H), dtype=torch.float32, device=dev)
        for e in range(E):
            tok, slot = (ids == e).nonzero(as_tuple=True)
            if tok.numel():
                h = x32[tok] @ w13_d[e].float().t()
                a = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
                out.index_add_(0, tok, (a @ w2_d[e].float().t()) * w[tok, slot].unsqueeze(-1))
        return out

    # ---- GPU experts --------------------------------------------------------------------------------
    state = {"gpu_impl": args.gpu_impl if cuda else "loop"}
    bounds: dict = {}
    key_dtype = torch.int32

    def make_gpu_path(n):
        mask = torch.zeros(E, dtype=torch.bool, device=dev)
        mask[:n] = True
        l2g = torch.full((E,), -1, dtype=torch.int32, device=dev)
        l2g[:n] = torch.arange(n, dtype=torch.int32, device=dev)
        w13, w2 = w13_d[:n], w2_d[:n]
        bounds[n] = torch.arange(1, n + 1, dtype=key_dtype, device=dev)
        impl = state["gpu_impl"]

        def gpu_path(x, ids, w):
            if n == 0:  # kt_ep_wrapper.py:5962-5966
                return torch.zeros_like(x)
            T = x.shape[0]
            gid = torch.where(mask[ids], l2g[ids], -1).view(-1)  # mask_and_remap_expert_ids
            key = torch.where(gid >= 0, gid, n)  # CPU experts sort last
            skey, order = torch.sort(key, stable=True)
            tok = order // K
            xs = x[tok]
            if impl == "grouped":  # group ends by binary search: no host sync (bincount would sync)
                offs = torch.searchsorted(skey, bounds[n], right=False).to(torch.int32)
                h = torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs)
                a = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
                o = torch._grouped_mm(a, w2.transpose(1, 2), offs=offs)
                valid = torch.arange(T * K, device=dev) < offs[-1]
                o = torch.where(valid.unsqueeze(-1), o.float() * w.view(-1)[order].unsqueeze(-1), 0.0)
            else:
                cnt = torch.bincount(key, minlength=n + 1)[:n].tolist()  # host sync (eager only)
                o = torch.zeros((T * K, H), dtype=torch.float32, device=dev)
                s = 0
                for e, c in enumerate(cnt):
                    if c:
                        h = xs[s:s + c] @ w13[e].t()
                        a = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
                        o[s:s + c] = (a @ w2[e].t()).float() * w.view(-1)[order[s:s + c]].unsqueeze(-1)
                    s += c
            return torch.zeros((T, H), dtype=torch.float32, device=dev).index_add_(0, tok, o).to(x.dtype)

        return gpu_path

    # ---- CPU experts (kt-kernel), one wrapper per count, as one layer each ------------------------
    tmp = tempfile.mkdtemp(prefix="kt-gpuexp-")
    wrappers = {}
    for li, n in enumerate(counts):
        m = torch.zeros(E, dtype=torch.bool)
        m[:n] = True  # generate_uniform_masks: masks[layer, :n] = True
        t0 = time.perf_counter()
        wp = os.path.join(tmp, f"layer{li}")
        os.makedirs(wp, exist_ok=True)
        wr = KTMoEWrapper(layer_idx=li, num_experts=E, num_experts_per_tok=K, hidden_size=H,
                          moe_intermediate_size=I, gpu_experts_mask=m, cpuinfer_threads=args.threads,
                          threadpool_count=1, numa_nodes=None, weight_path=wp,
                          chunked_prefill_size=args.prefill_qlen, swiglu_limit=0.0, swiglu_alpha=0.0,
                          method=args.method, max_deferred_experts_per_token=0)
        wr.load_weights_from_tensors(gate, up, down, torch.arange(E, dtype=torch.int64))
        wrappers[n] = wr
        print(f"[load] n={n} layer_idx={li} {time.perf_counter() - t0:.1f}s", flush=True)

    cpu_stream = torch.cuda.Stream() if cuda else None
    done = torch.cuda.Event() if cuda else None
    staging = {}

    def stream_of(s):
        return s.cuda_stream if s is not None else 0

    def cpu_submit(n, x, ids, w):
        wr = wrappers[n]
        if not cuda:
            wr.submit_forward(x, ids, w, 0)
            return x
        st = staging.get(x.shape[0])
        if st is None:
            st = staging[x.shape[0]] = torch.empty_like(x)
        st.copy_(x, non_blocking=True)
        main = torch.cuda.current_stream()
        cpu_stream.wait_stream(main)
        with torch.cuda.stream(cpu_stream):
            wr.submit_forward(st, ids, w, stream_of(cpu_stream))
        return st

    def cpu_sync(n, st):
        wr = wrappers[n]
        if not cuda:
            return wr.sync_forward(st, 0)
        with torch.cuda.stream(cpu_stream):
            out = wr.sync_forward(st, stream_of(cpu_stream))
            done.record(cpu_stream)
        torch.cuda.current_stream().wait_event(done)
        out.record_stream(torch.cuda.current_stream())
        return out

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def modes(n):
        gp = make_gpu_path(n)

        def layer(x, ids, w):
            st = cpu_submit(n, x, ids, w)
            out = gp(x, ids, w)
            return out + cpu_sync(n, st)

        def cpu_only(x, ids, w):
            return cpu_sync(n, cpu_submit(n, x, ids, w))

        return {"layer": layer, "cpu_only": cpu_only, "gpu_only": gp}

    def timeit(fn, inputs, warmup, repeats):
        for i in range(warmup):
            fn(*inputs[i % len(inputs)])
        sync()
        ts = []
        for i in range(repeats):
            inp = inputs[i % len(inputs)]
            t = time.perf_counter()
            fn(*inp)
            sync()
            ts.append(time.perf_counter() - t)
        return ts

    # correctness first: layer output vs the float32 reference of all experts
    res["check"] = {}
    xr, ir, wrr = check_input
    ref = reference(xr, ir, wrr)
    for n in counts:
        try:
            out = modes(n)["layer"](xr, ir, wrr).float()
            sync()
            err = ((out - ref).norm() / ref.norm()).item()
        except Exception as e:  # noqa: BLE001
            if state["gpu_impl"] != "grouped":
                raise
            out, err = None, float("inf")
            res["notes"].append(f"torch._grouped_mm failed ({type(e).__name__}: {str(e)[:200]})")
        if state["gpu_impl"] == "grouped" and err > 0.1:
            state["gpu_impl"] = "loop"  # one matmul pair per expert instead
            res["notes"].append(f"grouped GPU path gave rel_err {err} at n={n}: switched to --gpu-impl loop")
            out = modes(n)["layer"](xr, ir, wrr).float()
            sync()
            err = ((out - ref).norm() / ref.norm()).item()
        res["check"][str(n)] = {"qlen": xr.shape[0], "rel_err_vs_fp32": round(err, 5)}
        print(f"[check] n={n} rel_err={err:.4f}", flush=True)
    res["gpu_impl"] = state["gpu_impl"]
    save()

    for phase, inputs, warm, reps in (("decode", decode_inputs, args.decode_warmup, args.decode_repeats),
                                      ("prefill", [prefill_input], args.prefill_warmup, args.prefill_repeats)):
        for n in counts:
            ids_all = torch.cat([i for _, i, _ in inputs])
            gpu_share = (ids_all < n).float().mean().item()
            entry = {"qlen": inputs[0][0].shape[0], "routed_to_gpu_share": round(gpu_share, 4)}
            for mname, fn in modes(n).items():
                ts = timeit(fn, inputs, warm, reps)
                entry[mname] = {"median_ms": round(1e3 * median(ts), 4), "min_ms": round(1e3 * min(ts), 4),
                                "times_ms": [round(1e3 * t, 4) for t in ts]}
            res["results"].setdefault(phase, {})[str(n)] = entry
            print(f"[{phase}] n={n:2d} gpu_share={gpu_share:.3f} layer={entry['layer']['median_ms']:.3f}ms "
                  f"cpu_only={entry['cpu_only']['median_ms']:.3f}ms gpu_only={entry['gpu_only']['median_ms']:.3f}ms",
                  flush=True)
            save()

    # decode under CUDA-graph replay, as SGLang runs decode (kt-kernel's submit/sync are stream host
    # callbacks, so the CPU side is captured too); Python launch overhead is then gone
    if cuda:
        res["results"]["decode_graph"] = {}
        for n in counts:
            entry = {"qlen": 1}
            for mname, fn in modes(n).items():
                try:
                    x_s, i_s, w_s = (t.clone() for t in decode_inputs[0])
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        for _ in range(3):
                            fn(x_s, i_s, w_s)
                    torch.cuda.current_stream().wait_stream(s)
                    sync()
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        fn(x_s, i_s, w_s)
                    ts = []
                    for i in range(args.decode_warmup + args.decode_repeats):
                        x, ids, w = decode_inputs[i % len(decode_inputs)]
                        x_s.copy_(x), i_s.copy_(ids), w_s.copy_(w)
                        sync()
                        t = time.perf_counter()
                        graph.replay()
                        sync()
                        ts.append(time.perf_counter() - t)
                    ts = ts[args.decode_warmup:]
                    entry[mname] = {"median_ms": round(1e3 * median(ts), 4), "min_ms": round(1e3 * min(ts), 4),
                                    "times_ms": [round(1e3 * t, 4) for t in ts]}
                    del graph
                except Exception as e:  # noqa: BLE001
                    entry[mname] = {"error": f"{type(e).__name__}: {e}"[:300]}
            res["results"]["decode_graph"][str(n)] = entry
            print(f"[decode graph] n={n:2d} " + " ".join(
                f"{m}={v['median_ms']:.3f}ms" if "median_ms" in v else f"{m}=ERR({v['error'][:120]})"
                for m, v in entry.items() if isinstance(v, dict)), flush=True)
            save()
    save()
    print(f"done in {res['wall_s']} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
