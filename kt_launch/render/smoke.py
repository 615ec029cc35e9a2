"""`kt-launch smoke --url` output (pure): the verdict line first, one line per request, the findings; or JSON with
schema_version (docs/JSON.md). Rows come from resolve/smoke.replies_json."""

from __future__ import annotations

import json

from kt_launch.core.findings import Finding
from kt_launch.core.output import DEFAULT_WIDTH, SCHEMA_VERSION
from kt_launch.render.text import findings_text, num


def smoke_text(url: str, model: str, rows: list[dict], findings: list[Finding], summary: str,
               width: int = DEFAULT_WIDTH) -> str:
    ok = all(r["ok"] for r in rows) and bool(rows)
    head = f"OK: {summary}" if ok else f"FAILED: {sum(not r['ok'] for r in rows)} of {len(rows)} request(s)"
    lines = [head, f"server: {url} (model {model})", "requests:"]
    for r in rows:
        lines.append(f"  {'ok  ' if r['ok'] else 'FAIL'} {r['request']}: HTTP {r['status'] or '-'}, prompt "
                     f"{num(r['prompt_tokens'], 'd')} tok, completion {num(r['completion_tokens'], 'd')} tok, TTFT "
                     f"{num(r['ttft_s'], '.2f')} s, decode {num(r['decode_tok_s'], '.1f')} tok/s")
    return "\n".join(lines) + "\n" + findings_text(findings, width)


def smoke_json(url: str, model: str, rows: list[dict], findings: list[Finding]) -> str:
    doc = {"schema_version": SCHEMA_VERSION, "ok": all(r["ok"] for r in rows) and bool(rows), "url": url,
           "model": model, "requests": rows, "findings": [f.to_json() for f in findings]}
    return json.dumps(doc, indent=2)
