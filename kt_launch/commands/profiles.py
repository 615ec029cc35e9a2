"""`kt-launch profiles`: every profile `--profile NAME` can find, and where it is (facts/locate.py searches)."""

from __future__ import annotations

import os
import sys

from kt_launch.commands.common import EXIT_OK, say
from kt_launch.facts.console import escape_controls
from kt_launch.facts.locate import list_profiles, profile_dir_env


def run(args, passthrough) -> int:
    rows = [(escape_controls(n), w, escape_controls(str(p))) for n, w, p in list_profiles()]  # aligned as shown
    width = max((len(n) for n, _, _ in rows), default=4)
    for name, where, path in rows:
        sys.stdout.write(f"{name:<{width}}  {where:<24}  {path}\n")
    _, skipped = profile_dir_env(os.environ)
    if skipped:
        say(f"kt-launch: note: {skipped}")
    return EXIT_OK
