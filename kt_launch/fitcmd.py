"""`kt-launch fit`: how many GPU experts fit, per TP size and KV target, like llama.cpp's llama-fit-params.

Reads the same facts as a dry-run (headers once), resolves the profile, then asks the pure memory plan
(resolve/memory.py `fit_rows`) for every TP size the host's GPUs allow and KV targets of 8k, 32k and 128k tokens.
"""

from __future__ import annotations

import json
import sys

from kt_launch.app import Request, gather_inputs
from kt_launch.core.findings import has_errors
from kt_launch.render.memory import fit_text
from kt_launch.render.text import findings_text
from kt_launch.resolve.memory import fit_rows
from kt_launch.resolve.pipeline import resolve

EXIT_OK, EXIT_PLAN = 0, 3


def run_fit(args) -> int:
    _, inp = gather_inputs(Request(profile=args.profile, sets=tuple(args.sets), host_facts=args.host_facts))
    plan = resolve(inp)
    rows = fit_rows(inp, plan.values)
    ram = plan.memory.ram.to_json() if plan.memory is not None and plan.memory.ram is not None else None
    blocking = [f for f in plan.findings if f.level == "error" and f.code in ("KT-E108",)]
    if args.json:
        sys.stdout.write(json.dumps({"host": inp.host.source, "model": inp.config.model.path, "rows": rows,
                                     "ram": ram, "findings": [f.to_json() for f in blocking]}, indent=2) + "\n")
    else:
        sys.stdout.write(fit_text(rows, ram, f"{inp.config.model.path} on {inp.host.source}"))
        if blocking:
            sys.stdout.write(findings_text(blocking))
    return EXIT_PLAN if has_errors(blocking) or not rows else EXIT_OK
