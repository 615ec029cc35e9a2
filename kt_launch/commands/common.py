"""What every command shares: the exit codes, the text width, and the one way a command turns its arguments into an
app.Request and reads the profile once. Light on purpose: `--dry-run` imports this before anything else."""

from __future__ import annotations

import os
import sys

EXIT_OK, EXIT_INVALID, EXIT_PLAN = 0, 2, 3


def text_width(environ=None) -> int:
    """Columns for wrapped text: $COLUMNS, else the terminal's, else DEFAULT_WIDTH (a pipe or a file)."""
    from kt_launch.core.output import DEFAULT_WIDTH

    environ = os.environ if environ is None else environ
    cols = environ.get("COLUMNS", "")
    if cols.isdigit() and 0 < int(cols) < 10_000:
        return max(int(cols), 40)
    try:
        if sys.stdout.isatty():
            return max(os.get_terminal_size(sys.stdout.fileno()).columns, 40)
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_WIDTH


def request(args, passthrough, launch: bool = False, gate: str = "off"):
    """The app.Request of a profile command's arguments (--profile, --set, --host-facts, --model-facts, --no-check)."""
    from kt_launch.app import Request

    return Request(profile=args.profile, sets=tuple(args.sets), host_facts=args.host_facts,
                   checks=not args.no_check, passthrough=tuple(passthrough), model_facts=args.model_facts,
                   fleet_host=getattr(args, "fleet_host", None), launch=launch, gate=gate)


def load(req):
    """The profile, read once per command (its --set items and env too) for whichever plan it takes."""
    from kt_launch.app import load_request

    return load_request(req)


def say(line: str) -> None:
    """One line on stderr; a stderr that cannot be written is not a second error."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass
