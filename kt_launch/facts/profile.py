"""Where profile values come from, and which source won for each key.

Precedence (lowest first), declared once in `settings_customise_sources`:
built-in defaults < profile YAML (with `extends:`) < env `KT_LAUNCH_<SECTION>__<KEY>` < `--set key=value`.

pydantic-settings is used through its public API: `settings_customise_sources` orders the sources and
`InitSettingsSource` feeds each one. The profile is read by the bounded reader (YamlConfigSettingsSource
would read it itself, without the FIFO, size, depth and duplicate-key guards, and knows no `extends:`), and
env values go through the same typed parser as `--set` (EnvSettingsSource reads only os.environ and parses
scalars differently from `--set`); the `__` delimiter is `env_nested_delimiter`'s.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, get_origin

from pydantic import ValidationError, create_model
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from kt_launch.core.errors import ConfigError
from kt_launch.core.options import BY_KEY, SECTIONS
from kt_launch.core.profile import UserConfig, parse_text
from kt_launch.core.provenance import Origin, Provenance
from kt_launch.core.secrets import MASK, is_secret_name
from kt_launch.core.validation import error_text
from kt_launch.facts.reader import PROFILE, ReadError, read_yaml

ENV_PREFIX = "KT_LAUNCH_"
ENV_DELIMITER = "__"
# KT_LAUNCH_* variables that configure kt-launch itself rather than a profile key
OWN_ENV = frozenset({"KT_LAUNCH_PROFILE_DIR", "KT_LAUNCH_CACHE_DIR", "KT_LAUNCH_VENVS", "KT_LAUNCH_NO_VENV_SETUP"})
MAX_EXTENDS_DEPTH = 16
MAX_SHOWN = 80


class _Settings(BaseSettings):
    """UserConfig's fields under pydantic-settings, so the library merges the sources in its declared order.
    Built once (a subclass per call would rebuild the whole validator on every start)."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER,
                                      validate_default=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        """Precedence, highest first: --set, env, profile. Each is an InitSettingsSource over its parsed mapping."""
        return tuple(InitSettingsSource(settings_cls, layer) for layer in _LAYERS)


_LAYERS: list[dict[str, Any]] = []  # the current load's (--set, env, profile) mappings; a CLI loads one at a time
ProfileSettings = create_model("ProfileSettings", __base__=_Settings,
                               **{n: (f.annotation, f) for n, f in UserConfig.model_fields.items()})


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


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escaped(text: str) -> str:
    """Text with control characters (an ANSI escape, a newline, a carriage return) written as escapes, so a
    name from a file or the command line cannot recolour, rewrite or forge lines of the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _shown(text: str) -> str:
    """Text as messages may show it: control characters escaped, shortened."""
    text = escaped(text)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


# ---------------------------------------------------------------------------------------
# Profile: YAML with `extends:`
# ---------------------------------------------------------------------------------------

def read_profile(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged profile chain (parents first) and, per dotted key, the file that set it."""
    key_files: dict[str, str] = {}
    return _read_chain(path, (), key_files), key_files


def _read_chain(path: Path, seen: tuple[Path, ...], key_files: dict[str, str]) -> dict[str, Any]:
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
            raise ConfigError(f"profile {path}: extends: {_shown(parent)} — no such file {_shown(str(target))}")
        merged = _read_chain(target, (*seen, real), key_files)
    for key in _flatten(data):
        key_files[key] = str(path)
    return _deep_merge(merged, data)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """One profile file, whose root must be a mapping. Never constructs objects."""
    try:
        data = read_yaml(path, PROFILE)
    except ReadError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path}: the top level must be a mapping of sections (model:, kt:, ...), "
                          f"not a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"profile {path}: top-level key {_shown(repr(bad[0]))} is not a name")
    if data and "extends" not in data and not any(k in SECTIONS for k in data):
        raise ConfigError(_not_a_profile(path, list(data)))
    return data


def _not_a_profile(path: Path, keys: list[str]) -> str:
    """A mapping with no section at all is some other file (--profile /etc/shadow): its keys are its lines, so
    none is echoed, except one that is a plain name close to a section's (a typo: `modle:`)."""
    near = [(k, m[0]) for k in keys if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", k)
            and (m := difflib.get_close_matches(k.lower(), list(SECTIONS), n=1, cutoff=0.75))]
    hint = (f"; did you mean {near[0][1]!r} for {near[0][0]!r}?" if near else
            "; is this the right file? (see `kt-launch schema` for the sections)")
    return (f"profile {path}: not a kt-launch profile: none of its {len(keys)} top-level key(s) is a section "
            f"({', '.join(SECTIONS)}){hint}")


# ---------------------------------------------------------------------------------------
# Env and --set: one typed parser (core.profile.parse_text)
# ---------------------------------------------------------------------------------------

def _set_path(nested: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = nested
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {p!r} was already set to a value, not a section")
        node = child
    node[parts[-1]] = value


def _parse(key: str, value: str, where: str) -> Any:
    try:
        return parse_text(key, value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: value is not valid JSON ({e.msg}); quote lists like '[0,1]'") from None
    except RecursionError:
        raise ConfigError(f"{where}: value is nested too deeply") from None


def parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`--set kt.cpuinfer=48` strings -> nested dict of typed values and key -> how messages name the item."""
    nested: dict[str, Any] = {}
    where: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {_shown(key or item)!r}: expected KEY=VALUE, e.g. --set kt.cpuinfer=48")
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set {_shown(key)!r}: not a dotted key path like kt.cpuinfer")
        shown = f"--set {_shown(key)}"  # never the value: it may be a secret, or a megabyte
        _set_path(nested, key, _parse(key, value, shown), shown)
        where[key] = shown
    return nested, where


def _env_key(var: str) -> str | None:
    """KT_LAUNCH_KT__CPUINFER -> kt.cpuinfer (None when the name after the prefix has no section/key shape).
    Section and key names are case-free; the keys of a map keep their case: KT_LAUNCH_RUNTIME__ENV__HF_TOKEN
    sets runtime.env.HF_TOKEN (the server's variable is HF_TOKEN, not hf_token)."""
    rest = var[len(ENV_PREFIX):]
    if ENV_DELIMITER not in rest:
        return None
    parts = rest.split(ENV_DELIMITER)
    head = ".".join(p.lower() for p in parts[:2])
    option = BY_KEY.get(head)
    if option is not None and get_origin(option.type) is dict:
        return ".".join([head, *parts[2:]])
    return ".".join(p.lower() for p in parts)


def parse_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """KT_LAUNCH_* variables -> nested typed values, key -> variable, and warnings for names that set nothing."""
    nested: dict[str, Any] = {}
    where: dict[str, str] = {}
    warnings: list[str] = []
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX) or var in OWN_ENV:
            continue
        key = _env_key(var)
        if key is None or (key not in BY_KEY and key.split(".", 1)[0] not in SECTIONS):
            warnings.append(_unknown_env(var))
            continue
        _set_path(nested, key, _parse(key, environ[var], var), var)
        where[key] = var
    return nested, where, warnings


def _unknown_env(var: str) -> str:
    names = [ENV_PREFIX + k.replace(".", ENV_DELIMITER).upper() for k in BY_KEY]
    near = difflib.get_close_matches(var.upper(), names, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]}?" if near else f" (the form is {ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY>)"
    return f"environment variable {_shown(var)} is not a kt-launch setting and is ignored{hint}"


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

def load_config(profile: Path | None, environ: Mapping[str, str] | None = None,
                sets: list[str] | None = None, warnings: list[str] | None = None) -> tuple[UserConfig, Provenance]:
    """Build the UserConfig from all sources. Raises ConfigError (exit 2) for any invalid input.
    Warnings about ignored input (an unknown KT_LAUNCH_* variable) are appended to `warnings`."""
    environ = os.environ if environ is None else environ
    set_values, set_where = parse_sets(sets or [])
    env_values, env_where, env_warnings = parse_env(environ)
    if warnings is not None:
        warnings.extend(env_warnings)
    profile_values, key_files = read_profile(profile) if profile is not None else ({}, {})
    prov = _provenance(key_files, env_where, set_where)

    _LAYERS[:] = [set_values, env_values, profile_values]
    try:
        cfg = ProfileSettings()
    except ValidationError as e:
        raise ConfigError(_explain(e, prov, profile)) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid setting: {_shown(str(e))}") from None
    finally:
        _LAYERS.clear()
    return UserConfig.model_construct(**dict(cfg)), prov  # validated above; the sections are UserConfig's own


def _provenance(key_files: dict[str, str], env_where: dict[str, str], set_where: dict[str, str]) -> Provenance:
    prov = Provenance()
    for layer, source in ((key_files, "profile"), (env_where, "env"), (set_where, "cli")):
        for key, where in layer.items():
            for k in list(prov.origins):
                if k == key or k.startswith(key + "."):
                    del prov.origins[k]
            prov.origins[key] = Origin(source, where)
    return prov


def _explain(e: ValidationError, prov: Provenance, profile: Path | None) -> str:
    lines = []
    for err in e.errors()[:8]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        origin = _origin(prov, loc) if loc else None
        if origin is not None:
            where = origin.where if origin.source != "profile" else f"profile {origin.where}"
        elif profile is not None:
            where = f"profile {profile}"
        else:
            where = "settings"
        loc = escaped(loc)
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            msg = f"unknown key '{loc}'; {_nearest_key(loc)}"
        elif kind == "missing":
            msg = f"{loc} is required"
        else:
            text = error_text(err)
            named = where.lower().endswith(" " + loc.lower())  # `--set kt.cpuinfer` names the key already
            msg = f"{'' if named else loc + ': '}{text} (got {_shown_input(loc, err.get('input'))})"
        lines.append(f"{escaped(where)}: {msg}")
    if len(e.errors()) > 8:
        lines.append(f"... and {len(e.errors()) - 8} more")
    return "\n".join(lines)


def _nearest_key(loc: str) -> str:
    """`did you mean kt.cpuinfer?` for `kt.cpuinfr`: the closest registry keys, else where the list is."""
    close = difflib.get_close_matches(loc, list(BY_KEY), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return "check the spelling (see `kt-launch schema`)"


def _origin(prov: Provenance, loc: str) -> Origin | None:
    """Where the value at `loc` came from. pydantic matches section names case-free, so `--set KT.CPUINFER=5`
    fails at kt.CPUINFER: a key that differs only in case is the same setting, and is blamed on its source."""
    found = prov.of(loc)
    if found is not None:
        return found
    low = loc.lower()
    for key, o in prov.origins.items():
        k = key.lower()
        if k == low or k.startswith(low + ".") or low.startswith(k + "."):
            return o
    return None


def _shown_input(loc: str, got: Any) -> str:
    """The rejected value as an error may show it: masked before it is shortened; sections by type only.
    A registry key is secret when it is declared so (a count named ..._per_token is not); a free-form name
    (runtime.env.HF_TOKEN) is secret when it looks like one, whatever its value's type."""
    if isinstance(got, (dict, list)):
        return type(got).__name__
    option = BY_KEY.get(loc)
    if (option.secret if option is not None else is_secret_name(loc.rsplit(".", 1)[-1])):
        return MASK
    shown = repr(got)
    return shown if len(shown) <= 60 else shown[:57] + "..."
