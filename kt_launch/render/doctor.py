"""`kt-launch doctor`'s output: the host summary and the verdicts, as text or as JSON (the host-facts
format plus `findings`)."""

from __future__ import annotations

import json

from kt_launch.core.findings import Finding
from kt_launch.core.host import HostFacts
from kt_launch.core.output import SCHEMA_VERSION
from kt_launch.render.text import findings_text
from kt_launch.render.memory import GiB


def doctor_json(host: HostFacts, findings: list[Finding], record: dict | None = None) -> str:
    """The host facts (the `--host-facts` format) with the verdicts under `findings` (and `model_facts` with
    --model: the --model-facts format)."""
    doc = {"schema_version": SCHEMA_VERSION, **host.to_json()}
    if record is not None:
        doc["model_facts"] = record
    doc["findings"] = [f.to_json() for f in findings]
    return json.dumps(doc, indent=2) + "\n"


def _ids(ids) -> str:
    shown = ",".join(map(str, ids[:16]))
    return f"[{shown}{',...' if len(ids) > 16 else ''}]"


def doctor_text(host: HostFacts, findings: list[Finding], recorded: bool, record: dict | None = None) -> str:
    """A host summary, the verdicts and a one-line OK/FAIL; `recorded`: judged from a --host-facts file."""
    c = host.cpu
    lines = [
        f"host:   {host.source}",
        f"cpu:    {c.model}: {c.physical_cores} physical cores, {c.logical_cpus} logical CPUs, "
        f"{host.usable_physical_cores} usable physical cores",
        f"numa:   {len(host.numa)} node(s); with CPUs: {[n.id for n in host.cpu_numa_nodes]}",
        f"usable: {len(c.usable_cpus)} CPUs {_ids(c.usable_cpus)} from {host.cpus_source}; memory node(s) "
        + (f"{list(host.memory_nodes)} from {host.memory_nodes_source}" if host.memory_nodes is not None
           else "not known (all assumed)"),
        f"memory: {host.memory_total_bytes / GiB:.1f} GiB total, {host.memory_available_bytes / GiB:.1f} GiB "
        "available",
        f"gpus:   {', '.join(f'{g.index}: {g.name}' for g in host.gpus) or 'none'}",
    ]
    if record is not None:
        w = record["weights"]
        size = f"{sum(w['expert_by_layer'].values()) / GiB:.1f} GiB of routed experts" if w else "no safetensors headers"
        lines.append(f"model:  {record['path']}: {record['config'].get('model_type', '?')}, {size} "
                     "(record it for --model-facts with --json)")
    if recorded:
        lines.append("(recorded host: the interpreter, SGLang and sysctl checks are skipped)")
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    verdict = f"\nverdict: {'FAIL' if errors else 'OK'}: {errors} error(s), {warnings} warning(s)\n"
    return "\n".join(lines) + "\n\n" + findings_text(findings) + verdict
