"""A fleet plan -> each instance's command, the router's command, and the dry-run text and JSON.

The router command is sglang-router 0.3.2's own CLI (`python -m sglang_router.launch_router`, its parser is
`parse_router_args` in sglang_router/launch_router.py; tests/fleet checks the argv against it).
"""

from __future__ import annotations

import json
import shlex

from kt_launch.core.findings import Finding
from kt_launch.core.fleet import ROUTER_MODULE, FleetPlan, Instance, RouterSpec
from kt_launch.render.argv import Command, render_command
from kt_launch.render.redact import redact_argv, redact_env, redact_launcher_argv, scrub, scrub_findings, secret_values
from kt_launch.core.output import DEFAULT_WIDTH, SCHEMA_VERSION, verdict
from kt_launch.render.text import _resolved_json, _show, findings_text, placement_lines, value_rows

ORDER = {"error": 0, "warning": 1, "info": 2}


def router_command(spec: RouterSpec) -> Command:
    argv = [spec.python, "-m", ROUTER_MODULE, "--host", spec.host, "--port", str(spec.port),
            "--policy", spec.policy, "--prometheus-host", spec.host, "--prometheus-port", str(spec.metrics_port),
            "--worker-urls", *spec.worker_urls]
    if spec.api_key:
        argv += ["--api-key", spec.api_key]
    return Command(argv, {})


def router_url(spec: RouterSpec) -> str:
    return spec.url


def instance_command(inst: Instance) -> Command:
    """The single-instance command of one replica. CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number GPUs as
    nvidia-smi does, which is how the fleet picked each replica's GPUs by NUMA node."""
    cmd = render_command(inst.plan)
    if cmd.env.get("CUDA_VISIBLE_DEVICES"):
        cmd.env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return cmd


def instance_findings(inst: Instance, cmd: Command) -> list[Finding]:
    return sorted(inst.plan.findings + cmd.findings, key=lambda f: ORDER[f.level])


def fleet_ok(fp: FleetPlan, commands: list[Command]) -> bool:
    return fp.ok and not any(f.level == "error" for c in commands for f in c.findings)


def fleet_errors(fp: FleetPlan, commands: list[Command]) -> list[Finding]:
    """Every error of the plan, each instance's named, secrets masked (for stderr when nothing is launched)."""
    from dataclasses import replace

    secrets = fleet_secrets(fp, commands)
    out = [f for f in fp.findings if f.level == "error"]
    for inst, cmd in zip(fp.instances, commands):
        out += [replace(f, message=f"{inst.replica.name}: {f.message}") for f in instance_findings(inst, cmd)
                if f.level == "error"]
    return [replace(f, message=scrub(f.message, secrets), fix=scrub(f.fix, secrets)) for f in out]


def cpu_list(cpus) -> str:
    """0-31,64-95: the kernel's cpulist form (as in /proc/<pid>/status Cpus_allowed_list)."""
    out: list[str] = []
    for c in sorted(cpus):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out)


def fleet_verdict(fp: FleetPlan, commands: list[Command]) -> str:
    """The verdict over the fleet's own findings and every instance's."""
    return verdict(fp.findings + [f for i, c in zip(fp.instances, commands) for f in instance_findings(i, c)])


def export_argv(host_argv) -> list[str]:
    """`kt-launch export` with the same profile and settings as a host's command (its --fleet-host, --supervise
    and pass-through flags are the host's own)."""
    own = list(host_argv[1:])
    if "--" in own:
        own = own[:own.index("--")]
    keep = [a for a in own if not a.startswith("--fleet-host=") and a != "--supervise"]
    return ["kt-launch", "export", *keep, "--to", "kubernetes", "-o", "k8s"]


def fleet_secrets(fp: FleetPlan, commands: list[Command]) -> set[str]:
    """Every secret value the fleet plan knows: its commands' secret flags and environment, the router's key."""
    out: set[str] = set()
    for c in commands:
        out |= secret_values(c.argv, c.env)
    if fp.router is not None:
        rc = router_command(fp.router)
        out |= secret_values(rc.argv, rc.env)
    return out


def _findings_json(findings: list[Finding], secrets: set[str]) -> list[dict]:
    return [f.to_json() for f in scrub_findings(findings, secrets)]


def fleet_json(fp: FleetPlan, commands: list[Command]) -> str:
    secrets = fleet_secrets(fp, commands)
    doc: dict = {"schema_version": SCHEMA_VERSION, "verdict": fleet_verdict(fp, commands), "ok": fleet_ok(fp, commands),
                 "instances": [], "router": None, "findings": _findings_json(fp.findings, secrets)}
    for inst, cmd in zip(fp.instances, commands):
        doc["instances"].append({
            "name": inst.replica.name, "host": inst.replica.host, "url": inst.replica.url,
            "cpus": list(inst.replica.cpus),
            "argv": redact_argv(cmd.argv), "env": redact_env(cmd.env),
            "resolved": _resolved_json(inst.plan, secrets),
            "findings": _findings_json(instance_findings(inst, cmd), secrets),
        })
        if inst.plan.placement is not None:  # as the single plan's document: only where a placement is planned
            doc["instances"][-1]["placement"] = inst.plan.placement.to_json()
    if fp.router is not None:
        rc = router_command(fp.router)
        doc["router"] = {"argv": redact_argv(rc.argv), "env": redact_env(rc.env), "url": router_url(fp.router)}
    if fp.hosts:
        doc["hosts"] = [{"name": h.name, "address": h.address, "argv": list(redact_launcher_argv(h.argv, secrets)),
                         "urls": list(h.urls)}
                        for h in fp.hosts]
    return json.dumps(doc, indent=2)


def differing_keys(fp: FleetPlan) -> list[str]:
    """The per-replica values: what the fleet sets, what each replica derives from its own host view, and
    anything else that differs between instances."""
    keys: list[str] = []
    for inst in fp.instances:
        keys += [k for k in inst.plan.values if k not in keys]
    overridden = {o.key for i in fp.instances for o in i.replica.overrides}  # what the fleet sets per replica
    from_view = {k for i in fp.instances for k, r in i.plan.values.items() if r.source == "host"}  # its host view
    return [k for k in keys if k in overridden or k in from_view
            or len({json.dumps(i.plan.get(k), sort_keys=True, default=str) for i in fp.instances}) > 1]


def fleet_text(fp: FleetPlan, commands: list[Command], width: int = DEFAULT_WIDTH) -> str:
    secrets = fleet_secrets(fp, commands)
    n = len(fp.instances)
    parts = [fleet_verdict(fp, commands), f"# kt-launch plan (fleet: {n} instance{'s' if n != 1 else ''}"
             + (f" behind the SGLang router, policy {fp.router.policy})" if fp.router else ", this host's part)"), ""]
    if fp.router is not None:
        rc = router_command(fp.router)
        parts += [f"router: {router_url(fp.router)}  (OpenAI base URL {router_url(fp.router)}/v1)",
                  "  " + shlex.join(redact_argv(rc.argv)), ""]
    per = differing_keys(fp)
    all_findings = [instance_findings(i, c) for i, c in zip(fp.instances, commands)]
    common = [f for f in (all_findings[0] if all_findings else []) if all(f in fs for fs in all_findings)]
    for inst, cmd, fs in zip(fp.instances, commands, all_findings):
        r = inst.replica
        parts.append(f"instance {r.name}  on {r.host}  {r.url}" + (f"  cpus {cpu_list(r.cpus)}" if r.cpus else ""))
        parts.append("  command: " + shlex.join(redact_argv(cmd.argv)))
        if cmd.env:
            parts.append("  environment: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in
                                                       sorted(redact_env(cmd.env).items())))
        resolved = _resolved_json(inst.plan, secrets)
        rows = [(k, _show(k, d["value"]), d["source"], d["reason"]) for k, d in resolved.items() if k in per]
        if rows:
            parts.append("  per-replica values:")
            parts += value_rows(rows, "    ", width)
        own = [f for f in fs if f not in common]
        if own:
            parts += ["  " + line for line in findings_text(scrub_findings(own, secrets), width - 2).rstrip("\n").split("\n")]
        parts.append("")
    if fp.instances:
        resolved = _resolved_json(fp.instances[0].plan, secrets)
        rows = [(k, _show(k, d["value"]), d["source"], d["reason"]) for k, d in resolved.items() if k not in per]
        parts.append("values shared by every instance:")
        parts += value_rows(rows, "  ", width)
        parts.append("")
    parts += _placement_parts(fp, secrets, width)
    for h in fp.hosts:
        parts.append(f"host {h.name} ({h.address}): kt-launch runs nothing there; run this on {h.name}:")
        parts.append("  " + shlex.join(redact_launcher_argv(h.argv, secrets)))
        parts.append("  its instances: " + (" ".join(h.urls) or "none"))
        parts.append("")
    if fp.hosts:
        parts.append("or let an orchestrator run every host's part (Kubernetes, or compose / systemd per host):")
        parts.append("  " + shlex.join(export_argv(redact_launcher_argv(fp.hosts[0].argv, secrets))))
        parts.append("")
    shown = sorted(fp.findings + common, key=lambda f: ORDER[f.level])
    if common and len(fp.instances) > 1:
        parts.append("(the findings below concern the fleet, or every instance alike)")
    return "\n".join(parts) + "\n" + findings_text(scrub_findings(shown, secrets), width)


def _placement_parts(fp: FleetPlan, secrets: set[str], width: int) -> list[str]:
    """Each replica's expert placement table (render/text.placement_lines, as one instance shows it): once when every
    replica places its GPU experts alike, else under each replica's name."""
    placed = [(inst.replica.name, inst.plan.placement) for inst in fp.instances if inst.plan.placement is not None]
    if not placed:
        return []
    if len(placed) == len(fp.instances) and len({json.dumps(p.to_json(), sort_keys=True) for _, p in placed}) == 1:
        groups = [("every instance", placed[0][1])]
    else:
        groups = placed
    parts: list[str] = []
    for who, p in groups:
        lines = placement_lines(p, width)
        parts += [f"{lines[0]} ({who})", *lines[1:], ""]
    return [scrub(line, secrets) for line in parts]
