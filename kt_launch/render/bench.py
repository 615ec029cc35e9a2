"""`kt-launch bench` output (pure): the setup that makes a figure comparable, then one row per input length with
the published figure beside where one exists; or JSON with schema_version (docs/JSON.md)."""

from __future__ import annotations

import json

from kt_launch.core.findings import Finding
from kt_launch.core.output import DEFAULT_WIDTH, SCHEMA_VERSION
from kt_launch.render.text import findings_text, num, wrap

META = (("model", "model"), ("method", "method"), ("gpu_experts_per_layer", "GPU experts/layer"),
        ("cpuinfer", "cpuinfer"), ("pools", "pools"), ("tp_size", "TP"), ("gpus", "GPUs"), ("cpu_model", "CPU"),
        ("kt_kernel_version", "kt-kernel"), ("sglang_version", "SGLang"))


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def bench_text(url: str, meta: dict, rows: list[dict], published: dict | None, findings: list[Finding],
               concurrency: int, width: int = DEFAULT_WIDTH) -> str:
    ok = all(r["ok"] for r in rows)
    lines = [("OK" if ok else "FAILED") + f": kt-launch bench of {url}, {concurrency} request(s) at a time"]
    setup = ", ".join(f"{label} {', '.join(map(str, v)) if isinstance(v, list) else v}" for key, label in META
                      if (v := meta.get(key)) not in (None, [], ""))
    lines += wrap(setup or "setup unknown", width, "setup: ", "       ")
    lines.append(f"prompt tokens counted by: {meta.get('prompt_tokens_counted_by', '-')}")
    head = f"{'input':>6} {'prompt':>7} {'TTFT s':>8} {'prefill tok/s':>14} {'decode tok/s':>13}"
    if concurrency > 1:
        head += f" {'total decode':>13}"
    if published:
        head += f"   published ({published['hardware']}): prefill / decode"
    lines.append(head)
    for r in rows:
        line = (f"{_k(r['input_tokens']):>6} {num(r['prompt_tokens'], 'd'):>7} {num(r['ttft_s'], '.2f'):>8} "
                f"{num(r['prefill_tok_s']):>14} {num(r['decode_tok_s']):>13}")
        if concurrency > 1:
            line += f" {num(r['total_decode_tok_s']):>13}"
        if published:
            line += f"   {num(r['published_prefill_tok_s'])} / {num(r['published_decode_tok_s'])}"
        lines.append(line)
    if published:
        lines += wrap(f"published: {published['model']} on {published['hardware']} ({published['source']})", width,
                      "", "  ")
    return "\n".join(lines) + "\n" + (findings_text(findings, width) if findings else "")


def bench_json(url: str, meta: dict, rows: list[dict], published: dict | None, findings: list[Finding],
               concurrency: int, output_tokens: int) -> str:
    doc = {"schema_version": SCHEMA_VERSION, "ok": all(r["ok"] for r in rows), "url": url,
           "concurrency": concurrency, "output_tokens": output_tokens, "setup": meta, "rows": rows,
           "published": published, "findings": [f.to_json() for f in findings]}
    return json.dumps(doc, indent=2)
