"""Find a profile by path or by NAME: ./configs, then $KT_LAUNCH_PROFILE_DIR, then ~/.config/kt-launch/profiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from kt_launch.core.errors import ConfigError


def profile_dirs(environ: Mapping[str, str], cwd: Path) -> list[Path]:
    dirs = [cwd / "configs"]
    if environ.get("KT_LAUNCH_PROFILE_DIR"):
        dirs.append(Path(environ["KT_LAUNCH_PROFILE_DIR"]).expanduser())
    dirs.append(Path(environ.get("HOME", "~")).expanduser() / ".config" / "kt-launch" / "profiles")
    return dirs


def find_profile(ref: str, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    p = Path(ref).expanduser()
    if p.suffix in (".yaml", ".yml") or "/" in ref or p.exists():
        if p.exists():
            return p
        raise ConfigError(f"--profile {ref}: no such file")
    tried = []
    for d in profile_dirs(environ, cwd):
        for name in (f"{ref}.yaml", f"{ref}.yml", ref):
            cand = d / name
            tried.append(str(cand))
            if cand.is_file():
                return cand
    raise ConfigError(f"--profile {ref}: no profile of that name; looked in " + ", ".join(
        str(d) for d in profile_dirs(environ, cwd)))
