"""Find a profile by path or by NAME: an existing path first; then `NAME`, `NAME.yaml` and `NAME.yml` in ./configs,
$KT_LAUNCH_PROFILE_DIR, ~/.config/kt-launch/profiles and the bundled profiles. So `--profile demo`, `--profile
demo.yaml` and `--profile configs/demo.yaml` all work, from any directory, installed or not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from kt_launch.core.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent.parent
# An installed wheel carries the profiles as kt_launch/profiles/ (setup.py maps configs/ there); a source
# checkout (and its editable install) reads the single copy in the repo's top-level configs/.
BUNDLED = _PACKAGE / "profiles" if (_PACKAGE / "profiles").is_dir() else _PACKAGE.parent / "configs"
SUFFIXES = (".yaml", ".yml")


def _home(environ: Mapping[str, str]) -> Path | None:
    """$HOME when it is an absolute path; none otherwise (unset or empty must not make a relative folder)."""
    home = environ.get("HOME", "")
    return Path(home) if os.path.isabs(home) else None


def profile_dirs(environ: Mapping[str, str], cwd: Path) -> list[tuple[str, Path]]:
    """(label, dir) in lookup order."""
    dirs = [("./configs", cwd / "configs")]
    if environ.get("KT_LAUNCH_PROFILE_DIR"):
        dirs.append(("$KT_LAUNCH_PROFILE_DIR", Path(environ["KT_LAUNCH_PROFILE_DIR"]).expanduser()))
    home = _home(environ)
    if home is not None:
        dirs.append(("user", home / ".config" / "kt-launch" / "profiles"))
    dirs.append(("bundled", BUNDLED))
    return dirs


def _is_file(p: Path) -> bool:
    """is_file() that says no for names the OS refuses (too long, bad bytes) instead of raising."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):
        return False


def find_profile(ref: str, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    p = Path(ref)
    if ref.startswith("~"):
        try:
            p = p.expanduser()
        except RuntimeError:  # no HOME and no passwd entry: `~` means nothing here
            pass
    if _exists(p) and ("/" in ref or not p.is_dir()):  # an existing path wins (the reader names what it is);
        return p                                       # a bare NAME that is a directory here (./demo) is a NAME
    dirs = profile_dirs(environ, cwd)
    if "/" not in ref and ref not in ("", ".", ".."):
        for _, d in dirs:
            for name in (ref, f"{ref}.yaml", f"{ref}.yml"):
                if _is_file(d / name):
                    return d / name
    raise ConfigError(_miss(ref, dirs, environ, cwd))


def _miss(ref: str, dirs: list[tuple[str, Path]], environ: Mapping[str, str], cwd: Path) -> str:
    """What was tried and the closest names, so a typo costs one look."""
    import difflib  # only on a miss: start-up stays lean
    shown = ref[:200]
    if "/" in ref:
        return f"--profile {shown}: no such file"
    names = sorted({name for name, _, _ in list_profiles(environ, cwd)})
    stem = ref[:-5] if ref.endswith(".yaml") else ref[:-4] if ref.endswith(".yml") else ref
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"--profile {shown}: no such file, and no profile of that name in "
            + ", ".join(str(d) for _, d in dirs) + hint + " (`kt-launch profiles` lists them)")


def list_profiles(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[tuple[str, str, Path]]:
    """(name, where, path) of every profile that can be found by name; a name found earlier shadows later ones."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    seen: set[str] = set()
    out = []
    for label, d in profile_dirs(environ, cwd):
        try:
            entries = sorted(d.iterdir())
        except (OSError, ValueError):
            continue
        for f in entries:
            if f.suffix in SUFFIXES and _is_file(f):
                shadowed = f.stem in seen
                out.append((f.stem, label + (" (shadowed)" if shadowed else ""), f))
                seen.add(f.stem)
    return out
