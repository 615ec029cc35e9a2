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


def profile_dir_env(environ: Mapping[str, str]) -> tuple[Path | None, str | None]:
    """$KT_LAUNCH_PROFILE_DIR as a folder, or (None, why it names none): `~nosuchuser/p` has no home to expand
    to, and is then a miss with that line, never a relative folder named `~nosuchuser`."""
    text = environ.get("KT_LAUNCH_PROFILE_DIR", "")
    if not text:
        return None, None
    try:
        return Path(text).expanduser(), None
    except (RuntimeError, KeyError, ValueError):  # no such user, or no HOME and no passwd entry
        user = text.split("/", 1)[0]
        return None, (f"$KT_LAUNCH_PROFILE_DIR {text[:200]!r} was not searched: {user[:100]!r} names no home "
                      "directory here")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def profile_dirs(environ: Mapping[str, str], cwd: Path) -> list[tuple[str, Path]]:
    """(label, dir) in lookup order, each folder once (in a checkout ./configs is the bundled folder itself)."""
    dirs = [("./configs", cwd / "configs")]
    env_dir, _ = profile_dir_env(environ)
    if env_dir is not None:
        dirs.append(("$KT_LAUNCH_PROFILE_DIR", env_dir))
    home = _home(environ)
    if home is not None:
        dirs.append(("user", home / ".config" / "kt-launch" / "profiles"))
    dirs.append(("bundled", BUNDLED))
    out: list[tuple[str, Path]] = []
    for label, d in dirs:
        if not any(_same_file(d, seen) for _, seen in out):
            out.append((label, d))
    return out


def is_bundled_demo(path: Path) -> bool:
    """Whether a profile is the bundled `demo` one, which reads the synthetic tree `make demo` builds."""
    return _same_file(path, BUNDLED / "demo.yaml")


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
    _, skipped = profile_dir_env(environ)
    return (f"--profile {shown}: no such file, and no profile of that name in "
            + ", ".join(str(d) for _, d in dirs) + hint + " (`kt-launch profiles` lists them)"
            + (f"; {skipped}" if skipped else ""))


def list_profiles(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[tuple[str, str, Path]]:
    """(name, where, path) of every profile that can be found by name; a name found earlier shadows later ones."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    seen: dict[str, Path] = {}
    out = []
    for label, d in profile_dirs(environ, cwd):
        try:
            entries = sorted(d.iterdir())
        except (OSError, ValueError):
            continue
        for f in entries:
            if f.suffix in SUFFIXES and _is_file(f):
                first = seen.get(f.stem)
                if first is not None and (_same_file(first, f) or _same_bytes(first, f)):
                    continue  # the same profile again (a copy of the bundled one): listed once
                out.append((f.stem, label + (" (shadowed)" if first is not None else ""), f))
                seen.setdefault(f.stem, f)
    return out


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except (OSError, ValueError):
        return False
