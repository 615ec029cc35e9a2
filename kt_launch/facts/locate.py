"""Find a profile by path or by NAME: ./configs, then $KT_LAUNCH_PROFILE_DIR, then ~/.config/kt-launch/profiles,
then the profiles bundled in the package (so an installed wheel finds `deepseek-v2-lite-lora` from anywhere)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from kt_launch.core.errors import ConfigError

BUNDLED = Path(__file__).resolve().parent.parent / "profiles"
SUFFIXES = (".yaml", ".yml")


def profile_dirs(environ: Mapping[str, str], cwd: Path) -> list[tuple[str, Path]]:
    """(label, dir) in lookup order."""
    dirs = [("./configs", cwd / "configs")]
    if environ.get("KT_LAUNCH_PROFILE_DIR"):
        dirs.append(("$KT_LAUNCH_PROFILE_DIR", Path(environ["KT_LAUNCH_PROFILE_DIR"]).expanduser()))
    dirs.append(("user", Path(environ.get("HOME", "~")).expanduser() / ".config" / "kt-launch" / "profiles"))
    dirs.append(("bundled", BUNDLED))
    return dirs


def find_profile(ref: str, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    p = Path(ref).expanduser()
    if p.suffix in SUFFIXES or "/" in ref or p.is_file():  # a bare name that is a directory here is a NAME
        if p.exists():
            return p
        raise ConfigError(f"--profile {ref[:200]}: no such file")
    for _, d in profile_dirs(environ, cwd):
        for name in (f"{ref}.yaml", f"{ref}.yml"):
            cand = d / name
            if cand.is_file():
                return cand
    raise ConfigError(f"--profile {ref[:200]}: no profile of that name; looked in " + ", ".join(
        str(d) for _, d in profile_dirs(environ, cwd)) + " (`kt-launch profiles` lists them)")


def list_profiles(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[tuple[str, str, Path]]:
    """(name, where, path) of every profile that can be found by name; a name found earlier shadows later ones."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    seen: set[str] = set()
    out = []
    for label, d in profile_dirs(environ, cwd):
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for f in entries:
            if f.suffix in SUFFIXES and f.is_file():
                shadowed = f.stem in seen
                out.append((f.stem, label + (" (shadowed)" if shadowed else ""), f))
                seen.add(f.stem)
    return out
