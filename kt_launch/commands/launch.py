"""`kt-launch --profile P` (no command): plan the profile and exec SGLang, or print the plan (--dry-run), or run it
supervised (--supervise); a profile with a `fleet` takes the fleet branch. The heavy parts (the supervisors, the
exec) are imported only on the branch that runs them, so `--dry-run` stays fast."""

from __future__ import annotations

import sys

from kt_launch.commands.common import EXIT_OK, EXIT_PLAN, load, request, text_width
from kt_launch.core.errors import ConfigError


def run(args, passthrough) -> int:
    from kt_launch.app import plan_request
    from kt_launch.render.text import findings_text, plan_json, plan_text

    supervised = getattr(args, "supervise", False)
    if not supervised and (getattr(args, "grace_period", None) is not None
                           or getattr(args, "ready_timeout", None) is not None
                           or getattr(args, "restart", None) is not None
                           or getattr(args, "max_restarts", None) is not None
                           or getattr(args, "smoke", None) is not None
                           or getattr(args, "smoke_timeout", None) is not None):
        raise ConfigError("--grace-period, --ready-timeout, --restart and --smoke need --supervise (exec hands the "
                          "process over)")
    req = request(args, passthrough, launch=not args.dry_run, gate="cached" if args.dry_run else "run")
    loaded = load(req)
    if req.fleet_host is not None or loaded.config.fleet is not None:
        return run_fleet(args, req, loaded)
    if getattr(args, "fail_fast", False):
        raise ConfigError("--fail-fast needs a profile with a `fleet` section (and --supervise)")
    out = plan_request(req, loaded=loaded)
    if args.dry_run:
        sys.stdout.write(plan_json(out.plan, out.command, out.findings) + "\n" if args.json
                         else plan_text(out.plan, out.command, out.findings, text_width()))
        return EXIT_OK if out.ok else EXIT_PLAN
    from kt_launch.render.redact import safe_findings

    if not out.ok:
        safe = safe_findings(out.command, out.findings)
        sys.stderr.write(findings_text(safe))
        sys.stderr.write("kt-launch: the plan has errors; nothing was launched (see --dry-run)\n")
        if supervised and args.json:
            _exit_event(EXIT_PLAN, [f for f in safe if f.level == "error"])
        return EXIT_PLAN
    if args.host_facts:
        from kt_launch.run.supervise import host_facts_warning

        sys.stderr.write(host_facts_warning(args.host_facts))
    if supervised:
        import gc

        from kt_launch.run.supervise import launch_supervised

        gc.enable()  # a supervisor may run for days

        return launch_supervised(out, args)
    from kt_launch.run.execute import exec_command

    return exec_command(out.command, safe_findings(out.command, out.findings))


def run_fleet(args, req, loaded=None) -> int:
    """The `fleet` branch of a launch: dry-run text/JSON, or run the local instances and the router supervised.
    A fleet is several processes, so it needs --supervise (there is no single process to exec)."""
    from kt_launch.app import plan_fleet
    from kt_launch.render.fleet import fleet_json, fleet_text

    if getattr(args, "fail_fast", False) and not args.supervise:
        raise ConfigError("--fail-fast needs --supervise")
    out = plan_fleet(req, loaded=loaded)
    if args.dry_run:
        sys.stdout.write(fleet_json(out.plan, out.commands) + "\n" if args.json
                         else fleet_text(out.plan, out.commands, text_width()))
        return EXIT_OK if out.ok else EXIT_PLAN
    if not out.ok:
        from kt_launch.render.fleet import fleet_errors
        from kt_launch.render.text import findings_text

        errors = fleet_errors(out.plan, out.commands)
        sys.stderr.write(findings_text(errors))
        sys.stderr.write("kt-launch: the fleet plan has errors; nothing was launched (see --dry-run)\n")
        if args.supervise and args.json:
            from kt_launch.render.fleet import fleet_secrets

            _exit_event(EXIT_PLAN, [f for f in errors if f.level == "error"], fleet_secrets(out.plan, out.commands))
        return EXIT_PLAN
    if not args.supervise:
        raise ConfigError("a fleet runs several processes: use --supervise (or --dry-run to see the commands)")
    if args.host_facts:
        from kt_launch.run.supervise import host_facts_warning

        sys.stderr.write(host_facts_warning(args.host_facts))
    import gc

    from kt_launch.run.fleet_supervise import launch_fleet

    gc.enable()
    return launch_fleet(out, args)


def _exit_event(code: int, findings, secrets: set[str] | None = None) -> None:
    """--supervise --json: a plan with errors ends in the `exit` event too (reason plan_errors, its errors)."""
    from kt_launch.render.events import event_line, exit_event

    sys.stdout.write(event_line(exit_event(code, "plan_errors", findings=findings), secrets or set()))
    sys.stdout.flush()
