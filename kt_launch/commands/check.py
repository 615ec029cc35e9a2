"""`kt-launch check`: every check of the plan --dry-run would print, fleets included: the same verdict and exit code,
and nothing launched."""

from __future__ import annotations

import sys

from kt_launch.commands.common import EXIT_OK, EXIT_PLAN, load, request, text_width


def run(args, passthrough) -> int:
    from kt_launch.app import plan_request

    req = request(args, passthrough, gate="run")
    loaded = load(req)
    if loaded.config.fleet is not None:
        from kt_launch.app import plan_fleet
        from kt_launch.render.fleet import fleet_json, fleet_text

        fleet = plan_fleet(req, loaded=loaded)
        sys.stdout.write(fleet_json(fleet.plan, fleet.commands) + "\n" if args.json
                         else fleet_text(fleet.plan, fleet.commands, text_width()))
        return EXIT_OK if fleet.ok else EXIT_PLAN
    from kt_launch.render.text import check_text, plan_json

    out = plan_request(req, loaded=loaded)
    sys.stdout.write(plan_json(out.plan, out.command, out.findings) + "\n" if args.json
                     else check_text(out.command, out.findings, text_width(), out.plan.placement))
    return EXIT_OK if out.ok else EXIT_PLAN
