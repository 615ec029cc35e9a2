"""`kt-launch probe`: run the plan's kt-kernel MoE layer once for real (in the target interpreter) and check it
against torch."""

from __future__ import annotations

import json
import sys

from kt_launch.commands.common import EXIT_OK, EXIT_PLAN
from kt_launch.commands.kernel import document_head, plan_and_spec, server_env, target_python
from kt_launch.core.findings import has_errors
from kt_launch.render.text import findings_text


def run(args, passthrough) -> int:
    from kt_launch.backend.probe import probe_findings, probe_summary, run_probe

    out, spec = plan_and_spec(args, passthrough, use_weights=args.use_weights)
    if out is None:
        return EXIT_PLAN
    if not args.json:
        print(f"probing {spec.method}: {spec.cpuinfer} threads in {spec.threadpool_count} pool(s), "
              f"{out.model.shape_key}, in {target_python(args, out)} ...", file=sys.stderr)
    result = run_probe(spec, target_python(args, out), timeout_s=args.timeout, env=server_env(out))
    findings = probe_findings(result)
    if args.json:
        print(json.dumps({**document_head(findings), "spec": spec.to_json(), "result": result.to_json(),
                          "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        print(probe_summary(result))
        sys.stdout.write(findings_text(findings))
    return EXIT_PLAN if has_errors(findings) else EXIT_OK
