"""Whether an interpreter can import sglang_router, the fleet's router (find_spec only: nothing is imported)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from kt_launch.facts.worker import die_with_parent


def router_importable(python: str) -> bool:
    """True when `python` finds sglang_router; this interpreter is asked in-process, another one by a subprocess."""
    if python == sys.executable:
        return importlib.util.find_spec("sglang_router") is not None
    try:
        return subprocess.run([python, "-c", "import importlib.util as u, sys; "
                               "sys.exit(u.find_spec('sglang_router') is None)"], capture_output=True,
                              timeout=10, preexec_fn=die_with_parent()).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
