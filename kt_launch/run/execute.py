"""Replace this process with SGLang: an argv list and an environment, never a shell."""

from __future__ import annotations

import os
import sys

from kt_launch.render.argv import Command
from kt_launch.render.text import findings_text


def exec_command(cmd: Command, findings) -> int:
    shown = [f for f in findings if f.level != "info"]
    if shown:
        sys.stderr.write(findings_text(shown))
    env = {**os.environ, **cmd.env}
    sys.stderr.flush()
    sys.stdout.flush()
    try:
        os.execvpe(cmd.argv[0], cmd.argv, env)
    except OSError as e:
        print(f"kt-launch: error: cannot start {cmd.argv[0]}: {e.strerror or e} (runtime.python)", file=sys.stderr)
        return 2
    return 0  # not reached
