"""The commands of kt-launch, one module each, and the table cli.py dispatches by.

Each module holds `run(args, passthrough) -> int` (an exit code; bad input raises core.errors.ConfigError, which
cli.py turns into exit 2). A module is imported only when its command runs, so `--dry-run` loads launch's alone
(and no torch, sglang or kt_kernel ever). To add a command: its module, one row below, and its parser in cli.py.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

LAUNCH = "kt_launch.commands.launch"  # no command: plan and exec (--dry-run, --supervise, a fleet)

# command name -> the module whose run() does it
COMMANDS: dict[str, str] = {
    "check": "kt_launch.commands.check",
    "probe": "kt_launch.commands.probe",
    "tune": "kt_launch.commands.tune",
    "convert": "kt_launch.commands.convert",
    "fit": "kt_launch.commands.fit",
    "init": "kt_launch.commands.init",
    "doctor": "kt_launch.commands.doctor",
    "profiles": "kt_launch.commands.profiles",
    "schema": "kt_launch.commands.schema",
    "export": "kt_launch.commands.export",
    "smoke": "kt_launch.commands.smoke",
    "bench": "kt_launch.commands.bench",
    "calibrate": "kt_launch.commands.calibrate",
}


def command(module: str) -> Callable[..., int]:
    """The run() of a command module named in COMMANDS (or LAUNCH), imported now."""
    return import_module(module).run
