"""`kt-launch fit`: how many GPU experts fit, per TP size and KV target, like llama.cpp's llama-fit-params.

It makes the very plan `--dry-run` makes for the same inputs (app.plan_request, or app.plan_fleet for a profile with
a `fleet`: every replica on its share of its host), decides by that plan's memory findings (`MEMORY_CODES`: the
model shape, the CPU experts' RAM, the GPU budget of the profile's TP size and count), and adds the rows: the pure
memory plan (resolve/memory_fit.py `fit_rows`) for every TP size the GPUs allow and KV targets of 8k, 32k and 128k
tokens, from the plan's own inputs. So `fit` is BLOCKED exactly where `--dry-run` is blocked on memory (issue 23
items 4, 5, 7: it used to recompute a subset and say OK where nothing fitted, for fleets and for --model-facts);
the rows then say which TP size and count would fit. Exit 3 always comes with an error finding that says why.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from kt_launch.app import Request, load_request, plan_fleet, plan_request
from kt_launch.commands.common import EXIT_OK, EXIT_PLAN, text_width
from kt_launch.core.findings import Finding, error, has_errors
from kt_launch.core.output import SCHEMA_VERSION, verdict
from kt_launch.render.memory import fit_text
from kt_launch.render.text import findings_text
from kt_launch.resolve.memory_fit import fit_rows

# A plan's memory findings, declared (never read from a code's prefix): the model shape, the CPU experts' RAM (per
# NUMA node too), the GPU budget of the profile's TP size and count, FP8 TP divisibility, the KV target, the activation
# reserve, memory other processes hold, and why nothing could be sized. `fit` decides by exactly these of the plan.
MEMORY_CODES = frozenset({"KT-E108", "KT-E230", "KT-W230", "KT-E601", "KT-I602", "KT-E603", "KT-W604", "KT-I605",
                          "KT-W606", "KT-W607", "KT-W608", "KT-I609", "KT-E610", "KT-W611", "KT-W612", "KT-E613",
                          "KT-W615", "KT-W616", "KT-E711"})
_ORDER = {"error": 0, "warning": 1, "info": 2}


def memory_findings(findings: list[Finding]) -> list[Finding]:
    """The plan's findings that `fit` decides by (the same list `--dry-run` prints, filtered by MEMORY_CODES)."""
    return [f for f in findings if f.code in MEMORY_CODES]


def fit_findings(host_gpus: int, rows, plan_findings: list[Finding]) -> list[Finding]:
    """The plan's memory findings and the rows' own (`FitRows.findings`), plus an error when there is nothing to fit
    (no GPU known, no headers)."""
    out = memory_findings(plan_findings)
    out += [f for f in rows.findings if f not in out]
    if not host_gpus:
        out.append(error("KT-E620", "fit: no GPU is known on this host, so there is nothing to size",
                         "run it on the GPU server, or give --host-facts FILE (`kt-launch doctor --json` there)"))
    elif not rows and not has_errors(out):
        out.append(error("KT-E621", "fit: the model's size is unknown (no readable config.json and safetensors "
                         "headers in model.path)", "point model.path at the HF checkpoint dir (`kt-launch check` "
                         "names what is missing)"))
    return sorted(out, key=lambda f: _ORDER[f.level])


def _ram(plan) -> dict | None:
    return plan.memory.ram.to_json() if plan.memory is not None and plan.memory.ram is not None else None


def run(args, passthrough) -> int:
    width = text_width()
    mf = getattr(args, "model_facts", None)  # recorded elsewhere: nothing of model.path is read here
    req = Request(profile=args.profile, sets=tuple(args.sets), host_facts=args.host_facts, model_facts=mf,
                  checks=mf is None)
    loaded = load_request(req)
    if loaded.config.fleet is not None:
        return _run_fleet_fit(args, req, loaded, width)
    out = plan_request(req, loaded=loaded)
    inp = out.inputs
    rows = fit_rows(inp, out.plan.values)
    ram = _ram(out.plan)
    findings = fit_findings(len(inp.host.gpus), rows, out.findings)
    if args.json:
        sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, "verdict": verdict(findings),
                                     "ok": not has_errors(findings), "host": inp.host.source,
                                     "model": inp.config.model.path, "rows": rows, "ram": ram,
                                     "findings": [f.to_json() for f in findings]}, indent=2) + "\n")
    else:
        sys.stdout.write(verdict(findings) + "\n")
        sys.stdout.write(fit_text(rows, ram, f"{inp.config.model.path} on {inp.host.source}"))
        sys.stdout.write("\n" + findings_text(findings, width))
    return EXIT_PLAN if has_errors(findings) else EXIT_OK


def _run_fleet_fit(args, req: Request, loaded, width: int) -> int:
    """A fleet: the rows and the memory findings of every replica, each on its own share of its host (what
    `--dry-run` and `check` judge), the replica named in each finding."""
    from kt_launch.render.fleet import instance_findings

    fleet = plan_fleet(req, loaded=loaded)
    findings = memory_findings(fleet.plan.findings)
    parts = []
    for inst, cmd in zip(fleet.plan.instances, fleet.commands):
        name = inst.replica.name
        rows = fit_rows(inst.inputs, inst.plan.values)
        own = memory_findings(instance_findings(inst, cmd)) + list(rows.findings)  # a CPU-only replica sizes no GPU
        findings += [replace(f, message=f"{name}: {f.message}") for f in own]
        parts.append((inst, rows))
    findings = sorted(findings, key=lambda f: _ORDER[f.level])
    model = loaded.config.model.path
    if args.json:
        replicas = [{"name": inst.replica.name, "host": inst.inputs.host.source,
                     "rows": [dict(r, replica=inst.replica.name) for r in rows], "ram": _ram(inst.plan)}
                    for inst, rows in parts]
        sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, "verdict": verdict(findings),
                                     "ok": not has_errors(findings), "host": req.host_facts or "this machine",
                                     "model": model, "rows": [r for x in replicas for r in x["rows"]], "ram": None,
                                     "replicas": replicas, "findings": [f.to_json() for f in findings]},
                                    indent=2) + "\n")
    else:
        sys.stdout.write(verdict(findings) + "\n")
        for inst, rows in parts:
            sys.stdout.write(fit_text(rows, _ram(inst.plan), f"{model}, fleet replica {inst.replica.name} on "
                                      f"{inst.inputs.host.source}") + "\n")
        sys.stdout.write(findings_text(findings, width))
    return EXIT_PLAN if has_errors(findings) else EXIT_OK
