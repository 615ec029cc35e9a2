"""Replace this process with SGLang: an argv list and an environment, never a shell."""

from __future__ import annotations

import errno
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
        print(f"kt-launch: error: {exec_failure(cmd, e)}", file=sys.stderr)
        return 2
    return 0  # not reached


def exec_failure(cmd: Command, e: OSError) -> str:
    """Why the exec failed, blaming what caused it: the size of the command and environment (E2BIG), or the
    interpreter (missing, not executable, not a program)."""
    if e.errno == errno.E2BIG:
        size = sum(len(a) + 1 for a in cmd.argv) + sum(len(k) + len(v) + 2 for k, v in {**os.environ, **cmd.env}.items())
        return (f"the command and environment are too large for the kernel ({size} bytes, {len(cmd.argv)} arguments; "
                "E2BIG): shorten server.extra_args, the arguments after `--`, runtime.env or the inherited environment")
    return f"cannot start {cmd.argv[0]}: {e.strerror or e} (runtime.python)"
