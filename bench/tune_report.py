#!/usr/bin/env python3
"""Collect device sweep outputs into one data file, and render the BENCHMARKS.md tables from it.

    python bench/tune_report.py collect --out tests/data/amx_sweep_h200_xeon16.json \
        --run DIR[:label] ...            # dirs written by bench/tune_device_sweep.py
    python bench/tune_report.py table tests/data/amx_sweep_h200_xeon16.json

The table rows "resolver untuned default", "tuned", "physical-cores rule" and "kt run rule" are
computed from the recorded host facts with the resolver's own rule (kt_launch.resolve.threads) and
with select_best() on the merged rounds; nothing in the table is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kt_launch.backend.tune import Sweep, merge_sweeps, ratios, select_best  # noqa: E402


def collect(args) -> None:
    data: dict = {"format": "kt-launch amx sweep v1", "machine": None, "lscpu": None, "probes": [], "sweeps": {}}
    for spec in args.run:
        d, _, label = spec.partition(":")
        p = Path(d)
        host = json.loads((p / "host.json").read_text())
        if data["machine"] is None:
            data["machine"] = host
        elif host.get("fingerprint") != data["machine"].get("fingerprint"):
            raise SystemExit(f"{d}: host fingerprint differs from the first run")
        if (p / "lscpu.txt").exists() and data["lscpu"] is None:
            keep = ("Model name", "CPU family", "Model:", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
                    "L2 cache", "L3 cache", "NUMA node", "Hypervisor vendor", "Flags")
            data["lscpu"] = [ln for ln in (p / "lscpu.txt").read_text().splitlines() if ln.startswith(keep)]
        if (p / "probes.json").exists():
            data["probes"] += json.loads((p / "probes.json").read_text())
        for f in sorted(p.glob("sweep_*.json")):
            sw = json.loads(f.read_text())
            sw.setdefault("meta", {})["lease"] = label or d
            path = (sw["meta"].get("sft_path") or "forward") if "_SFT" in sw["method"] else None
            key = sw["method"] + (f"/{path}" if path else "")
            data["sweeps"].setdefault(key, []).append(sw)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{k} x{len(v)}" for k, v in data["sweeps"].items()))


def rule_points(machine: dict) -> dict[str, int]:
    from kt_launch.facts.host import host_from_json
    from kt_launch.resolve.threads import untuned_cpuinfer

    host = host_from_json(machine)
    return {
        "resolver untuned default": untuned_cpuinfer(host, 1),
        "physical-cores rule (all)": host.usable_physical_cores,
        "kt run rule (0.8 × logical)": int(host.cpu.logical_cpus * 0.8),
    }


def fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def table(args) -> None:
    data = json.loads(Path(args.file).read_text())
    rules = rule_points(data["machine"])
    for key, rounds in data["sweeps"].items():
        sweeps = [Sweep.from_json(r) for r in rounds]
        merged = merge_sweeps(sweeps)
        per_round = [ratios(s) for s in sweeps]
        rs = ratios(merged)
        choice = select_best(merged)
        print(f"\n#### {key}: {len(rounds)} round(s), prefill qlen {merged.prefill_qlen}, "
              f"decode repeats {[r['meta'].get('decode_repeats') for r in rounds]}, "
              f"prefill repeats {[r['meta'].get('prefill_repeats') for r in rounds]}, "
              f"order {[r['meta'].get('order') for r in rounds]}, leases {[r['meta'].get('lease') for r in rounds]}\n")
        hdr = "| cpuinfer | decode tok/s | prefill tok/s | decode / best | prefill / best | per-round decode / best | per-round prefill / best |"
        print(hdr)
        print("|---:|---:|---:|---:|---:|---|---|")
        for p in merged.points:
            d, pr = rs.get(p.point, (None, None))
            rd = " ".join(fmt(r.get(p.point, (None, None))[0]) for r in per_round)
            rp = " ".join(fmt(r.get(p.point, (None, None))[1]) for r in per_round)
            print(f"| {p.cpuinfer} | {p.decode_tokens_per_s or 0:,.0f} | {p.prefill_tokens_per_s or 0:,.0f} | "
                  f"{fmt(d)} | {fmt(pr)} | {rd} | {rp} |")
        print("\n| rule | cpuinfer | decode / best | prefill / best |\n|---|---:|---:|---:|")
        rows = [("resolver untuned default", rules["resolver untuned default"])]
        if choice:
            rows.append(("tuned (select_best)", choice.cpuinfer))
        rows += [("physical-cores rule (all)", rules["physical-cores rule (all)"]),
                 ("kt run rule (0.8 × logical)", rules["kt run rule (0.8 × logical)"])]
        for name, t in rows:
            r = next((v for pt, v in rs.items() if pt.cpuinfer == t and pt.threadpool_count == 1), None)
            print(f"| {name} | {t} | {fmt(r[0] if r else None)} | {fmt(r[1] if r else None)} |")
        if choice:
            print(f"\nselect_best: {choice.reason}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--out", required=True)
    c.add_argument("--run", action="append", required=True)
    t = sub.add_parser("table")
    t.add_argument("file")
    args = ap.parse_args()
    collect(args) if args.cmd == "collect" else table(args)


if __name__ == "__main__":
    main()
