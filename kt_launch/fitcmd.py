"""`kt-launch fit`: how many GPU experts fit, per TP size and KV target, like llama.cpp's llama-fit-params.

Reads the same facts as a dry-run (headers once), resolves the same plan, then asks the pure memory plan
(resolve/memory_fit.py `fit_rows`) for every TP size the host's GPUs allow and KV targets of 8k, 32k and 128k tokens.
Its verdict and exit code follow the plan's memory findings (the RAM check KT-E230 included), so `fit` and
`--dry-run` never disagree; exit 3 always comes with an error finding that says why.
"""

from __future__ import annotations

import json
import sys

from kt_launch.app import Request, gather_inputs
from kt_launch.core.findings import Finding, error, has_errors
from kt_launch.core.output import DEFAULT_WIDTH, SCHEMA_VERSION, verdict
from kt_launch.render.memory import fit_text
from kt_launch.render.text import findings_text
from kt_launch.resolve.memory_fit import fit_rows
from kt_launch.resolve.pipeline import resolve

EXIT_OK, EXIT_PLAN = 0, 3

# The plan's findings that hold whatever TP size and count the rows pick: the model shape, the CPU experts' RAM
# (the same at every TP size), and the profile's own reserve. The GPU budget of the profile's current TP size and
# count (KT-E601, E603, W604, W606, E610) is what the rows answer, so it does not decide fit's exit; the rows' own
# findings (an impossible KV target, TP sizes left out) come with them.
FIT_CODES = frozenset({"KT-E108", "KT-E230", "KT-W230", "KT-W608", "KT-I605", "KT-I609", "KT-W611", "KT-W612",
                       "KT-W615", "KT-W616"})


def fit_findings(host_gpus: int, rows, plan_findings: list[Finding]) -> list[Finding]:
    """The plan's fit findings and the rows' own (`FitRows.findings`), plus an error when there is nothing to fit
    (no GPU known, no headers)."""
    out = [f for f in plan_findings if f.code in FIT_CODES]
    out += [f for f in rows.findings if f not in out]
    if not host_gpus:
        out.append(error("KT-E620", "fit: no GPU is known on this host, so there is nothing to size",
                         "run it on the GPU server, or give --host-facts FILE (`kt-launch doctor --json` there)"))
    elif not rows and not has_errors(out):
        out.append(error("KT-E621", "fit: the model's size is unknown (no readable config.json and safetensors "
                         "headers in model.path)", "point model.path at the HF checkpoint dir (`kt-launch check` "
                         "names what is missing)"))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.level])


def run_fit(args, width: int = DEFAULT_WIDTH) -> int:
    mf = getattr(args, "model_facts", None)  # recorded elsewhere: nothing of model.path is read here
    _, inp = gather_inputs(Request(profile=args.profile, sets=tuple(args.sets), host_facts=args.host_facts,
                                   model_facts=mf, checks=mf is None))
    plan = resolve(inp)
    rows = fit_rows(inp, plan.values)
    ram = plan.memory.ram.to_json() if plan.memory is not None and plan.memory.ram is not None else None
    findings = fit_findings(len(inp.host.gpus), rows, plan.findings)
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
