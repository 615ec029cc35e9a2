"""Where profile values come from, and which source won for each key.

Precedence (lowest first), with pydantic-settings doing the merge:
built-in defaults < profile YAML (with `extends:`) < env `KT_LAUNCH_<SECTION>__<KEY>` < `--set key=value`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError
from pydantic._internal._utils import deep_update
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, YamlConfigSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from kt_launch.config.models import UserConfig
from kt_launch.errors import ConfigError  # noqa: F401  (re-exported: callers catch it from here too)
from kt_launch.render.redact import is_secret_name

MAX_EXTENDS_DEPTH = 16
# libyaml's safe loader when PyYAML was built with it (several times faster); never constructs objects.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


MAX_YAML_NODES = 100_000  # after expanding aliases: a "billion laughs" alias bomb is refused, not expanded


class _YamlTooBig(Exception):
    pass


class _AliasGuard:
    """Mixin for safe loaders: refuse documents whose aliases expand past MAX_YAML_NODES nodes or refer
    to themselves, before anything (construction, validation, merging) walks the expanded structure."""

    def construct_document(self, node):
        sizes: dict[int, int] = {}
        active: set[int] = set()

        def size(n) -> int:
            key = id(n)
            if key in sizes:
                return sizes[key]
            if key in active:
                raise _YamlTooBig("an alias refers to the node that contains it")
            active.add(key)
            total = 1
            if isinstance(n, yaml.SequenceNode):
                total += sum(size(c) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total += sum(size(k) + size(v) for k, v in n.value)
            active.discard(key)
            if total > MAX_YAML_NODES:
                raise _YamlTooBig(f"its anchors and aliases expand to more than {MAX_YAML_NODES} values")
            sizes[key] = total
            return total

        size(node)
        return super().construct_document(node)


class _GuardedSafeLoader(_AliasGuard, yaml.SafeLoader):
    pass


_GuardedFastLoader = type("_GuardedFastLoader", (_AliasGuard, _FAST_LOADER), {}) if _FAST_LOADER else None


def _safe_load(text: str):
    """Safe-load YAML; libyaml first, and PyYAML's own SafeLoader (the reference) where libyaml refuses."""
    if _GuardedFastLoader is not None:
        try:
            return yaml.load(text, Loader=_GuardedFastLoader)
        except yaml.YAMLError:
            pass
    return yaml.load(text, Loader=_GuardedSafeLoader)
MAX_PROFILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Origin:
    source: str  # "profile" | "env" | "cli"
    where: str  # file path, env var name or "--set key=value"


@dataclass
class Provenance:
    """Dotted key -> the source that supplied the winning value."""

    origins: dict[str, Origin] = field(default_factory=dict)

    def of(self, key: str) -> Origin | None:
        """The origin of `key` or of the closest enclosing key that was set as a whole."""
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            o = self.origins.get(".".join(parts[:i]))
            if o is not None:
                return o
        # A mapping value (e.g. runtime.env) set key by key: the highest-precedence source among its keys.
        inner = [o for k, o in self.origins.items() if k.startswith(key + ".")]
        rank = {"profile": 0, "env": 1, "cli": 2}
        return max(inner, key=lambda o: rank[o.source]) if inner else None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves (non-mapping values) of a nested mapping."""
    keys = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            keys.extend(_flatten(v, path + "."))
        else:
            keys.append(path)
    return keys


# ---------------------------------------------------------------------------------------
# Profile: YAML with `extends:`
# ---------------------------------------------------------------------------------------

class ProfileSource(YamlConfigSettingsSource):
    """YamlConfigSettingsSource that follows `extends:` (relative to the file) and records per-key files."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path):
        self.key_files: dict[str, str] = {}
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        return self._read_chain(Path(file_path), ())

    def _read_chain(self, path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
        real = path.resolve()
        if real in seen:
            chain = " -> ".join(str(p) for p in (*seen, real))
            raise ConfigError(f"profile {path}: `extends` loops back ({chain}); remove one of the extends")
        if len(seen) >= MAX_EXTENDS_DEPTH:
            raise ConfigError(f"profile {path}: `extends` chain deeper than {MAX_EXTENDS_DEPTH}")
        data = load_yaml_mapping(path)
        parent = data.pop("extends", None)
        merged: dict[str, Any] = {}
        if parent is not None:
            if not isinstance(parent, str) or not parent.strip():
                raise ConfigError(f"profile {path}: extends: must be a file name relative to {path.parent}")
            target = path.parent / parent
            if not target.exists():
                raise ConfigError(f"profile {path}: extends: {parent} — no such file {target}")
            merged = self._read_chain(target, (*seen, real))
        for key in _flatten(data):
            self.key_files[key] = str(path)
        return deep_update(merged, data)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Safe-load one YAML file whose root must be a mapping. Never constructs objects."""
    try:
        if path.is_dir():
            raise ConfigError(f"profile {path}: is a directory; give a .yaml file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"profile {path}: no such file")
    except OSError as e:
        raise ConfigError(f"profile {path}: cannot read ({e.strerror or e})")
    if len(raw) > MAX_PROFILE_BYTES:
        raise ConfigError(f"profile {path}: larger than {MAX_PROFILE_BYTES} bytes; is this really a profile?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"profile {path}: not UTF-8 (byte {e.start}); save it as UTF-8")
    try:
        data = _safe_load(text)
    except _YamlTooBig as e:
        raise ConfigError(f"profile {path}: refused: {e} (an alias bomb?); write the values out")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or e.__class__.__name__
        raise ConfigError(f"profile {path}: invalid YAML{where}: {problem}")
    except RecursionError:
        raise ConfigError(f"profile {path}: YAML nested too deeply")
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
        # PyYAML's constructors raise these for odd explicit tags (`!!bool maybe`, `!!int x`) and for integers
        # longer than Python's int-to-str digit limit
        raise ConfigError(f"profile {path}: invalid value ({e.__class__.__name__}: {str(e)[:200]}); "
                          "check explicit !!tags and very long numbers")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path}: the top level must be a mapping of sections (model:, kt:, ...), "
                          f"not a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"profile {path}: top-level key {bad[0]!r} is not a name")
    return data


# ---------------------------------------------------------------------------------------
# Env and --set
# ---------------------------------------------------------------------------------------

class MappingEnvSource(EnvSettingsSource):
    """EnvSettingsSource over an explicit mapping (os.environ by default), so tests can inject env."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self):
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`--set kt.cpuinfer=48` strings -> nested dict (values as env-style strings) and key -> original text.

    Values stay strings, so pydantic parses them exactly as it parses env vars ("48" -> 48); `null`
    clears a value; values starting with `[` or `{` are JSON (lists, mappings).
    """
    nested: dict[str, Any] = {}
    where: dict[str, str] = {}
    for item in items:
        shown = item if len(item) <= 80 else item[:77] + "..."  # messages name the item, not a megabyte of it
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {shown!r}: expected KEY=VALUE, e.g. --set kt.cpuinfer=48")
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set {shown!r}: {key[:80]!r} is not a dotted key path like kt.cpuinfer")
        parsed: Any = value
        if value.strip().lower() in ("null", "none", "~"):
            parsed = None
        elif value.strip()[:1] in ("[", "{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--set {key}: value is not valid JSON ({e.msg}); quote lists like '[0,1]'")
            except RecursionError:
                raise ConfigError(f"--set {key}: value is nested too deeply")
        node = nested
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {p!r} was already set to a value, not a section")
            node = child
        node[parts[-1]] = parsed
        where[key] = f"--set {shown}"
    return nested, where


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

def load_config(profile: Path | None, environ: Mapping[str, str] | None = None,
                sets: list[str] | None = None) -> tuple[UserConfig, Provenance]:
    """Build the UserConfig from all sources. Raises ConfigError (exit 2) for any invalid input."""
    environ = os.environ if environ is None else environ
    set_values, set_where = parse_sets(sets or [])
    holder: dict[str, Any] = {}

    class _Loaded(UserConfig):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings):
            env = MappingEnvSource(settings_cls, environ)
            srcs = [InitSettingsSource(settings_cls, set_values), env]
            if profile is not None:
                holder["profile"] = ProfileSource(settings_cls, profile)
                srcs.append(holder["profile"])
            holder["env"] = env
            return tuple(srcs)

    try:
        cfg = _Loaded()
    except ValidationError as e:
        prov = _provenance(holder, set_where)
        raise ConfigError(_explain(e, prov, profile)) from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # pydantic-settings' own errors (e.g. bad JSON in an env var)
        raise ConfigError(f"invalid setting: {e}{_env_hint(str(e), environ)}") from None
    return UserConfig.model_validate(cfg.model_dump()), _provenance(holder, set_where)


def _env_hint(message: str, environ: Mapping[str, str]) -> str:
    """Name the KT_LAUNCH_* variables behind a pydantic-settings env parsing error."""
    if "EnvSource" not in message and "EnvSettingsSource" not in message:
        return ""
    field_name = re.search(r'field "(\w+)"', message)
    prefix = "KT_LAUNCH_" + (field_name.group(1).upper() if field_name else "")
    names = sorted(k for k in environ if k.upper().startswith(prefix))
    return f" (from {', '.join(names)}; lists and mappings there are JSON)" if names else ""


def _provenance(holder: dict[str, Any], set_where: dict[str, str]) -> Provenance:
    prov = Provenance()
    profile: ProfileSource | None = holder.get("profile")
    if profile is not None:
        for key, file in profile.key_files.items():
            prov.origins[key] = Origin("profile", file)
    env = holder.get("env")
    if env is not None:
        for key in _flatten(env()):
            var = "KT_LAUNCH_" + key.replace(".", "__").upper()
            prov.origins[key] = Origin("env", var)
    for key, where in set_where.items():
        for k in list(prov.origins):
            if k == key or k.startswith(key + "."):
                del prov.origins[k]
        prov.origins[key] = Origin("cli", where)
    return prov


def _explain(e: ValidationError, prov: Provenance, profile: Path | None) -> str:
    lines = []
    for err in e.errors()[:8]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        origin = prov.of(loc) if loc else None
        if origin is not None:
            where = origin.where if origin.source != "profile" else f"profile {origin.where}"
        elif profile is not None:
            where = f"profile {profile}"
        else:
            where = "settings"
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            msg = f"unknown key {loc!r}; check the spelling (see `kt-launch schema`)"
        elif kind == "missing":
            msg = f"{loc} is required"
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            if len(shown) > 60:
                shown = shown[:57] + "..."
            if any(is_secret_name(str(part)) for part in err.get("loc", ())):
                shown = "***"  # never echo a secret, even a malformed one
            msg = f"{loc}: {err.get('msg')} (got {shown})"
        lines.append(f"{where}: {msg}")
    if len(e.errors()) > 8:
        lines.append(f"... and {len(e.errors()) - 8} more")
    return "\n".join(lines)
