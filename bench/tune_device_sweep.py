#!/usr/bin/env python3
"""Probe + thread sweep on one machine, recorded as JSON (run on the AMX device, or anywhere).

    python bench/tune_device_sweep.py --out DIR probes
    python bench/tune_device_sweep.py --out DIR sweep --method AMXINT8 --threads 1-16

Uses the launcher-side API (kt_launch.backend.probe / .tune): one worker process per point, the
interpreter given by --python (default: this one). Writes DIR/host.json, DIR/probes.json and
DIR/sweep_<METHOD>.json. bench/tune_report.py turns the sweeps into the BENCHMARKS.md table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kt_launch.backend.probe import ProbeSpec, probe_findings, run_probe  # noqa: E402
from kt_launch.backend.tune import TunePoint, host_fingerprint, select_best, tune  # noqa: E402

# DeepSeek-V2-Lite routed-expert layer (docs: model-shapes.md)
DSV2_LITE = dict(hidden_size=2048, moe_intermediate_size=1408, num_experts=64, top_k=6)
if os.environ.get("KT_SWEEP_TINY"):  # local smoke test of this script only
    DSV2_LITE = dict(hidden_size=256, moe_intermediate_size=256, num_experts=8, top_k=2)
DSV2_LITE_SHAPE_KEY = "deepseek_v2-h2048-i1408-e64-k6"


def parse_threads(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def host_json():
    try:
        from kt_launch.facts.host import gather_host
        h = gather_host()
        return h, h.to_json() | {"notes": list(h.notes)}
    except Exception as e:  # noqa: BLE001
        return None, {"error": f"{type(e).__name__}: {e}"}


def cmd_probes(args, host) -> None:
    base = dict(DSV2_LITE, chunked_prefill_size=args.chunk, decode_repeats=10, prefill_repeats=2)
    cores = host.usable_physical_cores if host else os.cpu_count() or 1
    threads = args.probe_threads or max(1, cores - (2 if cores >= 8 else 1 if cores >= 3 else 0))
    cases = [
        ("AMXINT8", {}),
        ("AMXINT4", {}),
        ("AMXBF16_SFT", dict(lora_rank=8, lora_alpha=16.0)),  # hf_dir weights, like SGLang reads model.path
        ("AMXINT8_SFT", dict(lora_rank=8, lora_alpha=16.0)),
        ("AMXINT4_SFT", dict(lora_rank=8, lora_alpha=16.0)),
        ("MOE_INT8", {}),  # passes kt-kernel's validation, no CPU variant implements it
        ("AMXINT8", dict(cpu_variant_override="avx2")),  # what an AVX2-only host would load
    ]
    results = []
    for method, kw in cases:
        spec = ProbeSpec(method=method, cpuinfer=threads, threadpool_count=1, **base, **kw)
        t = time.time()
        r = run_probe(spec, args.python, args.timeout)
        fs = probe_findings(r)
        print(f"[probe] {method}{' (variant ' + kw['cpu_variant_override'] + ')' if 'cpu_variant_override' in kw else ''}"
              f": ok={r.ok} passed={r.passed} variant={r.cpu_variant} rel_err={r.rel_err} "
              f"dec={r.decode_median_s} pre={r.prefill_median_s} out={r.output_device} "
              f"err={r.error_kind} ({time.time() - t:.1f}s)", flush=True)
        for f in fs:
            print(f"    {f.level} {f.code} {f.message[:300]}", flush=True)
        if not r.ok and r.stderr_tail:
            print("    stderr: " + r.stderr_tail[-600:].replace("\n", "\n    "), flush=True)
        results.append({"spec": spec.to_json(), "result": r.to_json(),
                        "findings": [f.to_json() for f in fs]})
    (Path(args.out) / "probes.json").write_text(json.dumps(results, indent=1))


def cmd_sweep(args, host) -> None:
    for method in args.method:
        kw = dict(lora_rank=8, lora_alpha=16.0) if "_SFT" in method else {}
        base = ProbeSpec(method=method, cpuinfer=1, threadpool_count=1, chunked_prefill_size=args.chunk,
                         prefill_qlen=args.chunk, decode_repeats=args.decode_repeats,
                         prefill_repeats=args.prefill_repeats, warmup=5, weight_source="tensors",
                         sft_path=args.sft_path, **DSV2_LITE, **kw)
        points = [TunePoint(t) for t in parse_threads(args.threads)]
        if args.reverse:
            points = points[::-1]
        t0 = time.time()

        partial = []

        def progress(i, n, pt, r):
            if r is None:
                return
            partial.append(r.to_json())  # written after every point: a killed run keeps its data
            (Path(args.out) / f"partial_{method}{args.tag}.json").write_text(json.dumps(partial))
            print(f"[{method} {i + 1}/{n}] {pt.label()}: ok={r.ok} decode {r.decode_median_s} s "
                  f"({r.decode_tokens_per_s}) prefill {r.prefill_median_s} s ({r.prefill_tokens_per_s}) "
                  f"rel_err={r.rel_err} wall {r.wall_s:.1f}s {'' if r.ok else r.error}", flush=True)

        sweep = tune(base, args.python, points, timeout_s=args.timeout, progress=progress, host=host,
                     shape_key=DSV2_LITE_SHAPE_KEY)
        choice = select_best(sweep)
        data = sweep.to_json()
        data["meta"] = {"decode_repeats": args.decode_repeats, "prefill_repeats": args.prefill_repeats,
                        "chunked_prefill_size": args.chunk, "wall_s": round(time.time() - t0, 1),
                        "order": "descending" if args.reverse else "ascending",
                        "lora_rank": kw.get("lora_rank"), "lora_alpha": kw.get("lora_alpha"),
                        "sft_path": args.sft_path if "_SFT" in method else None}
        data["selected"] = choice.to_json() if choice else None
        (Path(args.out) / f"sweep_{method}{args.tag}.json").write_text(json.dumps(data, indent=1))
        print(f"[{method}] selected: {choice.detail() if choice else None}; {time.time() - t0:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--probe-threads", type=int, default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probes")
    s = sub.add_parser("sweep")
    s.add_argument("--method", action="append", required=True)
    s.add_argument("--threads", default="1-16")
    s.add_argument("--decode-repeats", type=int, default=30)
    s.add_argument("--prefill-repeats", type=int, default=3)
    s.add_argument("--reverse", action="store_true")
    s.add_argument("--sft-path", default="forward", choices=("forward", "serving"))
    s.add_argument("--tag", default="")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    host, hj = host_json()
    if host is not None:
        hj["fingerprint"] = host_fingerprint(host)
    (Path(args.out) / "host.json").write_text(json.dumps(hj, indent=1))
    print(f"[host] {hj.get('cpu', {}).get('model')} physical={hj.get('cpu', {}).get('physical_cores')} "
          f"logical={hj.get('cpu', {}).get('logical_cpus')} usable_physical={hj.get('cpu', {}).get('usable_physical_cores')} "
          f"numa={[(n['id'], len(n['cpus'])) for n in hj.get('numa', [])]}", flush=True)
    if args.cmd == "probes":
        cmd_probes(args, host)
    else:
        cmd_sweep(args, host)


if __name__ == "__main__":
    main()
