"""Issue 25's placement gain: kt-kernel's CPU MoE time per token for a recorded, skewed expert distribution with the
frequency mask against the uniform mask, at the same number of GPU experts.

- A DeepSeek-V2-Lite-shaped model (27 layers, layer 0 dense, 26 MoE layers x 64 experts, top-6, hidden 2048,
  moe_intermediate 1408), its experts already converted to AMXINT8 (`--weights DIR`: kt-launch convert's output,
  `_layer_L/_numa_0/*.kt`).
- A skewed distribution, as SGLang's recorder writes it: per MoE layer a Zipf law over a random permutation of the
  expert ids (exponent drawn per layer in [0.6, 1.4], so layers differ in skew), sampled as routed-token counts
  (top-6 of 64 without replacement, 200k tokens), saved as a real `.pt` `{"logical_count": [1, 27, 64]}` and read
  back with `torch.load(weights_only=True)`, as sglang-kt 0.7.2 does (kt_ep_wrapper.py L4629-4661).
- Masks: frequency = kt-kernel's own `generate_gpu_experts_masks(counts.sum(0).float(), total)` (global top-k across
  layers), dense layers all-True, as sglang-kt does (L4675-4681); uniform = sglang-kt 0.7.2's
  `generate_uniform_masks` (L4411-4457: total // moe_layers a layer, the remainder to the first layers, the first
  N expert ids), rewritten here because sglang cannot be imported on that host. Total GPU experts = ratio x 26 x 64.
- Timing: for each mask, every MoE layer is built as SGLang builds it (`KTMoEWrapper(gpu_experts_mask=mask[l])`,
  `load_weights`), then decode-like batches (1 and 8 tokens) routed by the same distribution go through all 26
  layers' CPU forward (kt-kernel skips the GPU experts' ids on the CPU: should_skip_expert); the whole 26-layer pass
  is timed, REPS times over rotating batches, and the median ms per token reported. Also reported: the share of
  routed (token, expert) pairs the GPU experts serve, from the recorded counts and from the timed batches.

Run in an interpreter with torch and kt-kernel on an AMX host. Writes $OUT/placement_gain.json.
Env/args: --weights DIR (AMXINT8 dir), --threads N (default cores - 2), --reps N, --ratios 0.25,0.5,0.9.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

E, H, I, TOPK = 64, 2048, 1408, 6
NUM_LAYERS, FIRST_DENSE = 27, 1


def uniform_masks(torch, num_layers, num_experts, total, first_dense, freq=1):
    """sglang-kt 0.7.2 kt_ep_wrapper.py generate_uniform_masks (L4411-4457), the same arithmetic."""
    masks = torch.zeros(num_layers, num_experts, dtype=torch.bool)
    moe = [i for i in range(num_layers) if i >= first_dense and i % freq == 0]
    per, rem = divmod(total, len(moe))
    for idx, layer in enumerate(moe):
        masks[layer, :min(per + (1 if idx < rem else 0), num_experts)] = True
    for layer in range(num_layers):
        if layer < first_dense or layer % freq != 0:
            masks[layer, :] = True
    return masks


def frequency_masks(torch, generate_gpu_experts_masks, counts, total, first_dense):
    """sglang-kt 0.7.2's frequency branch (L4629-4681) with kt-kernel's own mask function."""
    freq = counts.sum(dim=0).float()
    masks = generate_gpu_experts_masks(freq, total)
    masks[:first_dense, :] = True
    return masks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--threads", type=int, default=max(2, (os.cpu_count() or 4) - 2))
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--ratios", default="0.25,0.5,0.9")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--layers", type=int, default=NUM_LAYERS - FIRST_DENSE, help="MoE layers (a local dry run: fewer)")
    ap.add_argument("--shape", default=f"{E},{H},{I}")
    a = ap.parse_args()
    os.environ.setdefault("KT_FORCE_SYNC_SUBMIT", "1")  # CPU tensors, kt-kernel's synchronous path
    import torch
    import kt_kernel
    from kt_kernel import KTMoEWrapper, generate_gpu_experts_masks

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kt_launch", "backend"))
    import probe_worker as pw  # the standalone probe script: its pin_memory shim for a host without CUDA

    notes = {"notes": []}
    pw._install_pin_shim(torch, notes)

    e_, h_, i_ = (int(x) for x in a.shape.split(","))
    moe_layers = list(range(FIRST_DENSE, FIRST_DENSE + a.layers))
    num_layers = FIRST_DENSE + a.layers
    out_dir = os.environ.get("OUT", "/tmp/out")
    os.makedirs(out_dir, exist_ok=True)
    res = {"cpu": _cpu(), "kt_kernel": getattr(kt_kernel, "__version__", "?"),
           "variant": getattr(kt_kernel, "__cpu_variant__", "?"), "torch": torch.__version__, "threads": a.threads,
           "shape": {"num_hidden_layers": num_layers, "moe_layers": a.layers, "experts": e_, "top_k": TOPK,
                     "hidden": h_, "moe_intermediate": i_, "method": "AMXINT8"}, "reps": a.reps, "runs": [],
           "notes": notes["notes"]}

    # -- the recorded distribution: Zipf over a random permutation, skew varying by layer ---------------------
    g = torch.Generator().manual_seed(25)
    probs = torch.zeros(num_layers, e_)
    for layer in moe_layers:
        s = 0.6 + 0.8 * torch.rand((), generator=g).item()
        w = 1.0 / torch.arange(1, e_ + 1, dtype=torch.float64) ** s
        probs[layer, torch.randperm(e_, generator=g)] = (w / w.sum()).float()
    tokens = 200_000
    counts = torch.zeros(1, num_layers, e_, dtype=torch.int64)
    for layer in moe_layers:
        picks = torch.multinomial(probs[layer].expand(20_000, e_), TOPK, replacement=False, generator=g)
        counts[0, layer] = torch.bincount(picks.flatten(), minlength=e_) * (tokens // 20_000)
    stats = os.path.join(out_dir, "expert_distribution.pt")
    torch.save({"logical_count": counts}, stats)
    counts = torch.load(stats, map_location="cpu", weights_only=True)["logical_count"]
    res["stats_file"] = {"path": os.path.basename(stats), "shape": list(counts.shape), "tokens": tokens}
    res["skew_top8_share"] = [round(float(torch.sort(counts[0, L], descending=True).values[:8].sum() /
                                          counts[0, L].sum()), 3) for L in moe_layers]

    # -- routed batches from the same distribution ----------------------------------------------------------
    batches = {}
    for bs in (int(x) for x in a.batches.split(",")):
        sets = []
        for _ in range(16):
            ids = {L: torch.multinomial(probs[L].expand(bs, e_), TOPK, replacement=False, generator=g).to(torch.int64)
                   .contiguous() for L in moe_layers}
            wts = torch.softmax(torch.randn((bs, TOPK), generator=g), dim=-1).float().contiguous()
            x = (torch.randn((bs, h_), generator=g) * 0.5).to(torch.bfloat16).contiguous()
            sets.append((x, ids, wts))
        batches[bs] = sets

    def build(mask):
        ws = []
        for L in moe_layers:
            w = KTMoEWrapper(layer_idx=L, num_experts=e_, num_experts_per_tok=TOPK, hidden_size=h_,
                             moe_intermediate_size=i_, gpu_experts_mask=mask[L].clone(), cpuinfer_threads=a.threads,
                             threadpool_count=1, weight_path=a.weights, chunked_prefill_size=512, method="AMXINT8")
            w.load_weights(torch.arange(e_, dtype=torch.int64))
            ws.append(w)
        return ws

    def time_pass(ws, bs):
        per_token = []
        sets = batches[bs]
        for r in range(a.reps + 3):
            x, ids, wts = sets[r % len(sets)]
            t = time.perf_counter()
            for w, L in zip(ws, moe_layers):
                w.forward(x, ids[L], wts, 0)
            dt = time.perf_counter() - t
            if r >= 3:  # warm-up passes dropped
                per_token.append(dt * 1e3 / bs)
        return per_token

    def served(mask, bs=None):
        if bs is None:
            c = counts[0, moe_layers].float()
            return float((c * mask[moe_layers].float()).sum() / c.sum())
        hit = tot = 0
        for _x, ids, _w in batches[bs]:
            for L in moe_layers:
                hit += int(mask[L][ids[L]].sum())
                tot += ids[L].numel()
        return hit / tot

    configs = [("none", 0.0, torch.zeros(num_layers, e_, dtype=torch.bool))]
    for ratio in (float(x) for x in a.ratios.split(",")):
        total = int(round(ratio * a.layers * e_))
        configs.append(("uniform", ratio, uniform_masks(torch, num_layers, e_, total, FIRST_DENSE)))
        configs.append(("frequency", ratio, frequency_masks(torch, generate_gpu_experts_masks, counts, total,
                                                            FIRST_DENSE)))
    for name, ratio, mask in configs:
        t0 = time.perf_counter()
        ws = build(mask)
        build_s = time.perf_counter() - t0
        run = {"strategy": name, "ratio": ratio, "gpu_experts": int(mask[moe_layers].sum()),
               "per_layer_gpu_experts": [int(mask[L].sum()) for L in moe_layers],
               "served_share_recorded": round(served(mask), 4), "build_s": round(build_s, 2)}
        for bs in batches:
            pt = time_pass(ws, bs)
            run[f"bs{bs}"] = {"median_ms_per_token": round(statistics.median(pt), 4),
                              "p10": round(sorted(pt)[len(pt) // 10], 4), "p90": round(sorted(pt)[len(pt) * 9 // 10], 4),
                              "served_share_timed": round(served(mask, bs), 4)}
        del ws
        res["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "per_layer_gpu_experts"}), flush=True)
        with open(os.path.join(out_dir, "placement_gain.json"), "w") as f:
            json.dump(res, f, indent=1)
    # ratios: uniform time / frequency time at the same GPU-expert count (> 1: frequency is faster)
    by = {(r["strategy"], r["ratio"]): r for r in res["runs"]}
    res["summary"] = []
    for ratio in sorted({r["ratio"] for r in res["runs"] if r["strategy"] != "none"}):
        u, f = by[("uniform", ratio)], by[("frequency", ratio)]
        row = {"ratio": ratio, "gpu_experts": u["gpu_experts"], "served_uniform": u["served_share_recorded"],
               "served_frequency": f["served_share_recorded"]}
        for bs in batches:
            mu, mf = u[f"bs{bs}"]["median_ms_per_token"], f[f"bs{bs}"]["median_ms_per_token"]
            row[f"bs{bs}"] = {"uniform_ms": mu, "frequency_ms": mf, "uniform_over_frequency": round(mu / mf, 3)}
        res["summary"].append(row)
    with open(os.path.join(out_dir, "placement_gain.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("placement summary", json.dumps(res["summary"]), flush=True)
    sys.stdout.flush()
    os._exit(0)  # kt-kernel's worker threads can hang interpreter teardown


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    main()
