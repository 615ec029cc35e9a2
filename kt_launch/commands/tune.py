"""`kt-launch tune`: measure the best kt.cpuinfer (and pool layout) on this host with the real kt-kernel, and
remember it in the tuning cache."""

from __future__ import annotations

import json
import sys

from kt_launch.commands.common import EXIT_OK, EXIT_PLAN
from kt_launch.commands.kernel import document_head, plan_and_spec, server_env, target_python
from kt_launch.core.errors import ConfigError
from kt_launch.core.findings import error
from kt_launch.render.text import findings_text


def run(args, passthrough) -> int:
    from kt_launch.backend.tune import format_progress, run_tune

    out, spec = plan_and_spec(args, passthrough)
    if out is None:
        return EXIT_PLAN
    threads = _thread_list(args.threads, out.host.cpu.logical_cpus) if args.threads else None

    def progress(*a):
        line = format_progress(*a)
        if line:
            print(line, file=sys.stderr, flush=True)

    print(f"tuning {spec.method} for {out.model.shape_key} on {out.host.cpu.model}: "
          f"{args.rounds} round(s), one process per point ...", file=sys.stderr)
    outcome = run_tune(spec, target_python(args, out), out.host, out.model.shape_key, rounds=args.rounds,
                       threads=threads, timeout_s=args.timeout, progress=progress, store=not args.no_store,
                       env=server_env(out))
    findings = [] if outcome.choice is not None else [
        error("KT-E411", "tune: no point of the sweep ran, so nothing was measured or stored",
              "see each point's failure above; `kt-launch probe` shows the first one in full")]
    if args.json:
        print(json.dumps({**document_head(findings), **outcome.to_json(), "findings": [f.to_json() for f in findings]},
                         indent=2))
    elif outcome.choice is None:
        sys.stdout.write(findings_text(findings))
    else:
        print(outcome.choice.detail())
        if outcome.cache_file:
            print(f"stored in {outcome.cache_file}; plans for this host, model shape and method now use it "
                  "(source `tuned`; --set kt.cpuinfer=N still wins)")
        elif not args.no_store:
            from kt_launch.facts.tuning import cache_path

            where = cache_path() or "(none: see the warning above)"
            print(f"kt-launch: warning: could not write the tuning cache {where}: nothing stored "
                  "(set KT_LAUNCH_CACHE_DIR to a writable folder)", file=sys.stderr)
    return EXIT_OK if outcome.choice is not None else EXIT_PLAN


def _thread_list(text: str, most: int) -> list[int]:
    """--threads: counts from 1 to the host's logical CPUs (more could not run, and would be stored as tuned)."""
    shown = text[:80]
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--threads {shown!r}: give thread counts like 8,10,12,14") from None
    if not vals or any(not 1 <= v <= max(most, 1) for v in vals):
        raise ConfigError(f"--threads {shown!r}: give thread counts from 1 to {max(most, 1)} (this host's logical "
                          "CPUs), like 8,10,12,14")
    return vals
