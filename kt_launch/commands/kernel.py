"""What `kt-launch probe`, `tune` and `convert` share: they plan the profile, refuse what the plan stops, and run
kt-kernel in the target interpreter (a subprocess: the launcher never imports torch or kt_kernel)."""

from __future__ import annotations

import json
import os
import sys

from kt_launch.commands.common import EXIT_PLAN
from kt_launch.core.errors import ConfigError
from kt_launch.core.findings import error, has_errors
from kt_launch.core.output import SCHEMA_VERSION, verdict
from kt_launch.render.text import findings_text


def document_head(findings) -> dict:
    """What every JSON document of probe, tune and convert opens with (docs/JSON.md): verdict and ok over findings."""
    return {"schema_version": SCHEMA_VERSION, "verdict": verdict(findings), "ok": not has_errors(findings)}


def refused(args, findings) -> int:
    """A refusal before any worker ran: the findings on stderr, and under --json the document on stdout too (verdict,
    ok, findings), so a script that reads stdout always gets one (issue 23: it used to get nothing)."""
    sys.stderr.write(findings_text(findings))
    if getattr(args, "json", False):
        print(json.dumps({**document_head(findings), "findings": [f.to_json() for f in findings]}, indent=2))
    return EXIT_PLAN


def plan_and_spec(args, passthrough, **spec_kw):
    """Resolve the profile and build the probe spec it implies; (None, None) after printing why not."""
    from kt_launch.app import Request, plan_request
    from kt_launch.backend.probe import spec_from_plan

    out = plan_request(Request(profile=args.profile, sets=tuple(args.sets), checks=True,
                               passthrough=tuple(passthrough)))
    refusals = [f for f in out.findings if f.stops("probe")]  # probe and tune refuse alike
    if out.model is None:
        refusals.append(error("KT-E410", f"the model shape is unknown: {out.model_problem or 'model.path not read'}",
                              "point model.path at a HuggingFace model dir (its config.json gives the layer shape)"))
    if refusals:
        refused(args, refusals)
        return None, None
    if args.prefill_qlen:
        spec_kw["prefill_qlen"] = args.prefill_qlen
    variant = server_env(out).get("KT_KERNEL_CPU_VARIANT")
    if variant:  # the server would load this variant: probe the same one
        spec_kw["cpu_variant_override"] = variant
    spec = spec_from_plan(out.plan, out.model, **spec_kw)
    problems = spec.validate()
    if problems:
        raise ConfigError(f"{args.profile}: " + "; ".join(problems))
    return out, spec


def server_env(out) -> dict[str, str]:
    """The environment SGLang would get: the inherited one plus the plan's (runtime.env, CUDA_VISIBLE_DEVICES)."""
    return {**os.environ, **out.command.env}


def target_python(args, out) -> str:
    return args.python or out.plan.get("runtime.python") or sys.executable
