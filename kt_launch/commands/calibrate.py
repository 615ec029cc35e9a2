"""`kt-launch calibrate --profile P [--prompts FILE] [--requests N] [--name WORKLOAD] [--list]`.

1. Plan the profile as a launch does, with SGLang's recorder on (`--expert-distribution-recorder-mode stat
   --expert-distribution-recorder-buffer-size -1`, every forward pass kept) and SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR
   set to a private temp dir; start it under the one supervisor (run/supervise.py).
2. Once /health answers: POST /start_expert_distribution_record, the workload, POST /dump_expert_distribution_record
   (run/workload.py); then the supervisor stops the server (Ctrl+C at any time stops it too; nothing is left running).
3. The dump is checked and reduced (summed over the buffer) in runtime.python (facts/expert_stats_worker.py
   `reduce`: torch.load weights_only, the shape against config.json, counts non-negative and not all zero).
4. It is stored in the calibration cache under the model's fingerprint and --name (facts/expert_stats.py); the next
   plan with kt.expert_placement: auto renders frequency placement with it.

A fleet profile is recorded by one server, the profile without its fleet section: the counts are the model's and the
workload's, and every replica finds the stored file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from kt_launch.commands.common import EXIT_OK, EXIT_PLAN, load, request
from kt_launch.core.errors import ConfigError

RECORDER_FLAGS = ("--expert-distribution-recorder-mode", "stat", "--expert-distribution-recorder-buffer-size", "-1")
RECORDER_DIR = "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"
EXIT_FAILED = 1


def run(args, passthrough) -> int:
    from kt_launch.facts import expert_stats as es

    problem = es.workload_problem(args.name)
    if problem:
        raise ConfigError(f"--name: {problem}")
    if any(a.startswith("--expert-distribution-recorder") for a in passthrough):
        raise ConfigError("kt-launch calibrate sets --expert-distribution-recorder-mode and -buffer-size itself; "
                          "remove them after `--`")
    req = request(args, (*passthrough, *RECORDER_FLAGS), launch=not args.list, gate="off" if args.list else "run")
    loaded = _one_server(load(req), args.list)
    cfg = loaded.config
    model = _model(cfg)
    fp = es.model_fingerprint(cfg.model.path, model)
    if args.list:
        return _list(fp, args)
    prompts = _prompts(args.prompts)
    problem = es.cache_problem(fp, args.name)
    if problem:
        raise ConfigError(problem)
    if args.python is not None and (problem := es.python_problem(args.python)):
        raise ConfigError(f"--python: {problem} (it checks the recorded file, after the workload)")
    from kt_launch.app import plan_request
    from kt_launch.render.redact import safe_findings
    from kt_launch.render.text import findings_text

    out = plan_request(req, loaded=loaded)
    if not out.ok:
        sys.stderr.write(findings_text(safe_findings(out.command, out.findings)))
        sys.stderr.write("kt-launch: the plan has errors; nothing was started (see --dry-run)\n")
        return EXIT_PLAN
    if args.host_facts:
        from kt_launch.run.supervise import host_facts_warning

        sys.stderr.write(host_facts_warning(args.host_facts))
    tmp = tempfile.mkdtemp(prefix="kt-launch-calibrate-")  # 0700: only this user reads the dump
    try:
        code, workload = _record(out, args, prompts, tmp)
        if code != 0:
            return code
        return _store(cfg, out, model, args, fp, tmp, workload)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _one_server(loaded, listing: bool):
    """The profile as one server: a fleet section is set aside (with a line saying so), since a calibration is the
    model's and the workload's, not a replica's, and the fleet's `kt.expert_placement: auto` finds it for every
    replica. The server gets this machine's plan of the profile without `fleet`, as `--dry-run` would show it."""
    if loaded.config.fleet is None:
        return loaded
    from dataclasses import replace

    from kt_launch.commands.common import say

    if not listing:
        say("kt-launch calibrate: the profile's fleet section is set aside: one server on this machine records "
            "(the calibration is stored for the model, and every replica's kt.expert_placement: auto finds it)")
    return replace(loaded, config=loaded.config.model_copy(update={"fleet": None}))


def _prompts(path: str | None):
    from kt_launch.facts.prompts import DEFAULT, messages, read_prompts
    from kt_launch.facts.reader import ReadError

    if path is None:
        return [messages(t) for t in DEFAULT]
    try:
        return read_prompts(path)
    except ReadError as e:
        raise ConfigError(str(e)) from None


def _record(out, args, prompts, tmp: str):
    from dataclasses import replace

    from kt_launch.run.supervise import Endpoint, options_of, supervise
    from kt_launch.run.workload import WorkloadResult, run_workload

    cmd = replace(out.command, env={**out.command.env, RECORDER_DIR: tmp})
    ep = Endpoint.of(out.plan, out.config)
    requests = args.requests or len(prompts)
    result = WorkloadResult()
    opts = options_of(args)
    opts.after_ready = lambda url: run_workload(url, ep.model, prompts, requests, args.max_tokens,
                                                args.request_timeout, ep.api_key, result)
    values = {k: r.value for k, r in out.plan.values.items()}
    import gc

    gc.enable()
    code = supervise(cmd, out.findings, ep, opts=opts, values=values)
    if code == 0 and not result.dumped:  # the server stopped on its own before the job ended
        sys.stderr.write("kt-launch: error: the server stopped before the workload was recorded\n")
        code = EXIT_FAILED
    return code, result


def _model(cfg):
    """The model's shape from config.json: read here whatever --no-check says (the counts must match it)."""
    from kt_launch.facts.model import ModelConfigError, read_model_facts

    try:
        return read_model_facts(cfg.model.path)
    except ModelConfigError as e:
        raise ConfigError(f"kt-launch calibrate needs the model's shape: {e}") from None


def _store(cfg, out, model, args, fp: str, tmp: str, workload) -> int:
    from kt_launch.facts import expert_stats as es

    dump = es.newest_dump(tmp)
    if dump is None:
        sys.stderr.write(f"kt-launch: error: the server wrote no expert_distribution_recorder_*.pt into {RECORDER_DIR} "
                         "after /dump_expert_distribution_record answered; nothing was stored\n")
        return EXIT_FAILED
    python = args.python or cfg.runtime.python or sys.executable
    try:
        staging = es.staging_path(fp, args.name)
    except OSError as e:  # the cache was checked before the start; it changed while the workload ran
        staging, why = None, f"the calibration cache cannot be made ({e.strerror or e})"
    else:
        why = "no cache folder to store the calibration in (set KT_LAUNCH_CACHE_DIR)"
    if staging is None:
        sys.stderr.write(f"kt-launch: error: {why}\n")
        return EXIT_FAILED
    try:
        found, why = es.run_check(python, dump, model, [], mode="reduce", out=str(staging))
        if found is None:
            sys.stderr.write(f"kt-launch: error: the recorded stats could not be checked: {why}\n")
            return EXIT_FAILED
        if not found.ok:
            sys.stderr.write(f"kt-launch: error: the recorded stats were refused: {found.message}\n")
            return EXIT_FAILED
        meta = {"fingerprint": fp, "model_path": os.path.abspath(cfg.model.path), "shape": list(found.shape),
                "routed_tokens": found.total, "requests": workload.sent, "answered": workload.answered,
                "prompts": os.path.abspath(args.prompts) if args.prompts else "default"}
        target = es.store_calibration(fp, args.name, staging, meta)
    except OSError as e:
        sys.stderr.write(f"kt-launch: error: the calibration could not be stored: {e.strerror or e}\n")
        return EXIT_FAILED
    finally:
        if staging.exists():
            staging.unlink()
    # the stored file, as the next plan reads it: its per-layer GPU experts at this plan's count
    n = out.plan.get("kt.num_gpu_experts")
    budgets = es.budgets_for(model, out.plan.get("kt.gpu_experts_ratio"))
    check, _ = es.run_check(python, str(target), model, budgets)
    doc = {"workload": args.name, "path": str(target), "fingerprint": fp, "shape": list(found.shape),
           "routed_tokens": found.total, "requests": workload.sent, "answered": workload.answered}
    lines = [f"kt-launch: calibration {args.name!r} stored: {target}",
             f"  recorded {found.total:.0f} routed tokens over {workload.answered} of {workload.sent} requests; "
             f"counts [{', '.join(map(str, found.shape))}] reduced to [1, {found.shape[1]}, {found.shape[2]}]"]
    if check is not None and check.ok and n is not None:
        layers = model.kt_moe_layers or len(model.moe_layers)
        b = int(n) * layers
        if b in check.per_layer:
            pl = check.per_layer[b]
            doc.update({"num_gpu_experts": n, "per_layer": list(pl), "served_share": check.served.get(b),
                        "uniform_served_share": check.uniform_served.get(b)})
            lines.append(f"  frequency at {n} GPU experts per layer: {min(pl)}-{max(pl)} per layer, serving "
                         f"{100 * check.served.get(b, 0):.1f} % of the recorded routed tokens on the GPU (uniform: "
                         f"{100 * check.uniform_served.get(b, 0):.1f} %)")
    lines.append("  use it: kt.expert_placement: auto (or --set kt.expert_placement=frequency "
                 f"--set kt.expert_stats={args.name})")
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _list(fp: str, args) -> int:
    from kt_launch.facts import expert_stats as es

    found = es.list_calibrations(fp)
    if args.json:
        sys.stdout.write(json.dumps({"fingerprint": fp, "calibrations": found}, indent=2) + "\n")
        return EXIT_OK
    if not found:
        sys.stdout.write(f"no calibration for this model (fingerprint {fp}); record one with kt-launch calibrate "
                         f"--profile {args.profile}\n")
        return EXIT_OK
    sys.stdout.write(f"calibrations of this model (fingerprint {fp}):\n")
    for c in found:
        sys.stdout.write(f"  {c['workload']:<20} {c.get('routed_tokens', 0):>14.0f} routed tokens  "
                         f"{c.get('requests', '?')} requests  {c['path']}\n")
    return EXIT_OK
