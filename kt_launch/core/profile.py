"""The profile schema: what a user may write in a YAML profile, env var or `--set`.

Keys are a contract (see README). Unknown keys are errors (extra="forbid"). Nothing here is
resolved: `None` means "let the resolver decide" and the plan says how it decided.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model, field_validator


from kt_launch.core.options import BY_KEY, MAX_REPLICAS, OPTIONS, ROUTER_POLICIES, SECTIONS, Option

_NULL_WORDS = ("null", "none", "~")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)  # built when first used


class NamedLora(Section):
    name: Annotated[str, Strict()]
    path: Annotated[str, Strict()]


_Text = Annotated[str, Strict(), Field(min_length=1)]
_Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
_Replicas = Union[Literal["per-numa"], Annotated[int, Strict(), Field(ge=0, le=MAX_REPLICAS)]]


class FleetHost(Section):
    """Another machine of the fleet (fleet.hosts[])."""

    name: _Text = Field(description="Its name in messages and instance names (node-b).")
    address: _Text = Field(description="Where the router reaches it; its replicas listen there.")
    host_facts: _Text = Field(description="Its `kt-launch doctor --json` file (relative paths: to the profile).")
    replicas: Optional[_Replicas] = Field(None, description="As fleet.replicas, for that host (null = per-numa).")


class FleetRouter(Section):
    """The router in front of the fleet (fleet.router)."""

    port: Optional[_Port] = Field(None, description="The one public port; null = server.port.")
    policy: Literal[ROUTER_POLICIES] = Field("cache_aware", description="sglang-router --policy.")
    metrics_port: Optional[_Port] = Field(None, description="The router's Prometheus port (sglang-router "
                                          "--prometheus-port, bound on server.host); null = its default 29000.")
    python: Optional[_Text] = Field(None, description="Interpreter that has sglang-router; null = runtime.python.")


NESTED: dict[str, type[Section]] = {"NamedLora": NamedLora, "FleetHost": FleetHost, "FleetRouter": FleetRouter}


def _strict(tp: Any, limits: dict[str, Any]) -> Any:
    """Scalars are strict: no bool where an int goes, no number where a string goes."""
    item_limits = {k[5:]: v for k, v in limits.items() if k.startswith("item_")}
    own = {k: v for k, v in limits.items() if not k.startswith("item_")}
    origin = get_origin(tp)
    if origin is list:
        (inner,) = get_args(tp)
        return Annotated[list[_strict(inner, item_limits)], Field(**own)] if own else list[_strict(inner, item_limits)]
    if tp in (int, float, bool, str):
        extra = {"allow_inf_nan": False} if tp is float else {}
        return Annotated[tp, Strict(), Field(**{**extra, **own})]
    if isinstance(tp, str) and tp in NESTED:
        return NESTED[tp]
    if origin is Union:  # limits apply to the numeric members (fleet.replicas: "per-numa" or an int >= 0)
        return Union[tuple(_strict(a, limits if a in (int, float) else {}) for a in get_args(tp))]
    return Annotated[tp, Field(**own)] if own else tp


# Token counts as vLLM users type them (its human-readable ints): a lower-case suffix is decimal (32k = 32000,
# 1.5k = 1500), an upper-case one binary (32K = 32768, 1M = 1048576). Declared per key by Option.tokens.
_TOKEN_TEXT = re.compile(r"([0-9]{1,12}(?:[.][0-9]{1,9})?)([kKmMgG])")  # longer is past any token count
_SUFFIX = {"k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def token_count(v: Any) -> Any:
    """`32K` -> 32768, `32k` -> 32000, `1.5k` -> 1500; anything else unchanged (the int check then names the key).
    A fraction is taken only where it comes out whole (`1.5K` is 1536; `0.3K` is 307.2, refused)."""
    if not isinstance(v, str):
        return v
    m = _TOKEN_TEXT.fullmatch(v.strip())
    if m is None:
        return v
    number, suffix = m.groups()
    whole, _, frac = number.partition(".")
    scaled = (int(whole + frac) * _SUFFIX[suffix], 10 ** len(frac))
    return scaled[0] // scaled[1] if scaled[0] % scaled[1] == 0 else v


def _field(o: Option) -> tuple[Any, Any]:
    tp = _strict(o.type, dict(o.limits))
    if o.tokens:
        tp = Annotated[tp, BeforeValidator(token_count)]
    if o.nullable:
        tp = Optional[tp]
    if o.required:
        return tp, Field(..., description=o.help)
    if isinstance(o.default, tuple):
        factory = dict if get_origin(o.type) is dict else list
        return tp, Field(default_factory=factory, description=o.help)
    if o.default is None and not o.nullable and isinstance(o.type, str) and o.type in NESTED:
        return tp, Field(default_factory=NESTED[o.type], description=o.help)  # a nested section: its own defaults
    return tp, Field(o.default, description=o.help)


def _upper(v: Any) -> Any:
    return v.strip().upper() if isinstance(v, str) else v


def _not_empty(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        raise ValueError("is empty; give a value, or null (or leave the key out) for the default")
    return v


# Every text key is checked for emptiness (`--set server.host=` would listen on every interface,
# `KT_LAUNCH_SERVER__API_KEY=` render `--api-key ''`): "" is never a value, null (or leaving the key out) is the
# default. A key's own checks beyond its type are its row's `checks` (core/options.py, core/key_checks.py).
def _not_empty_text(o: Option) -> Any:
    """_not_empty with the way back to the default this key has (null, leaving it out, or neither)."""
    if o.nullable and not o.required:
        return _not_empty
    default = "leave the key out for the default" if not o.required else "it is required"

    def check(v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError(f"is empty; give a value ({default})")
        return v
    return check


def _checks(o: Option) -> Any:
    """The key's checks after its type, run in order by one validator (pydantic messages name the key): the row's
    own `checks`, or for a text key without its own, that it is not empty. None: nothing to check."""
    checks = o.checks or ((_not_empty_text(o),) if o.type is str and o.settable else ())
    if not checks:
        return None

    def check(v: Any) -> Any:
        for c in checks:
            v = c(v)
        return v
    return check


_CHECKS = {o.key: c for o in OPTIONS if (c := _checks(o)) is not None}


def _section_model(name: str) -> type[Section]:
    fields = {o.name: _field(o) for o in OPTIONS if o.section == name and o.settable}
    validators = {f"_upper_{o.name}": field_validator(o.name, mode="before")(_upper)
                  for o in OPTIONS if o.section == name and o.upper}
    validators |= {f"_check_{o.name}": field_validator(o.name, mode="after")(_CHECKS[o.key])
                   for o in OPTIONS if o.section == name and o.key in _CHECKS}
    model = create_model(f"{name.title().replace('_', '')}Section", __base__=Section, __validators__=validators,
                         **fields)
    model.__doc__ = SECTIONS[name]["help"]
    return model


SECTION_MODELS: dict[str, type[Section]] = {name: _section_model(name) for name in SECTIONS}


def _user_config() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, spec in SECTIONS.items():
        model = SECTION_MODELS[name]
        if spec["optional"]:
            fields[name] = (Optional[model], Field(None, description=spec["help"]))
        elif any(o.required for o in OPTIONS if o.section == name):
            fields[name] = (model, Field(..., description=spec["help"]))
        else:
            fields[name] = (model, Field(default_factory=model, description=spec["help"]))
    return create_model("UserConfig", __config__=ConfigDict(extra="forbid", validate_default=True, defer_build=True),
                        **fields)


UserConfig = _user_config()
UserConfig.__doc__ = "A whole profile. Sources and their precedence live in `kt_launch.facts.profile`."


def setting(cfg: Any, key: str) -> Any:
    """The profile value of a dotted key (None when its optional section is absent)."""
    section, name = key.split(".", 1)
    sec = getattr(cfg, section)
    return None if sec is None else getattr(sec, name)


def parse_text(key: str, text: str) -> Any:
    """A value given as text (env var or --set) -> the Python value its option's type takes. One parser for both,
    so `KT_LAUNCH_KT__CPUINFER=48` and `--set kt.cpuinfer=48` mean the same. Text that does not look like the
    type is returned as is, and validation then names the key; lists and mappings are JSON."""
    o = BY_KEY.get(key)
    s = text.strip()
    if len(s) > 4000:  # no setting is that long; Python refuses to parse such integers anyway
        return text
    if s.lower() in _NULL_WORDS:
        return None
    if s[:1] in ("[", "{"):
        return json.loads(s)  # the caller turns JSONDecodeError/RecursionError into a message naming the key
    tp = o.type if o is not None else _nested_type(key)
    if get_origin(tp) is Union and int in get_args(tp) and _INT.fullmatch(s):
        return int(s)  # fleet.replicas=2
    if get_origin(tp) is Union and type(None) in get_args(tp):
        tp = next(a for a in get_args(tp) if a is not type(None))
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if tp is bool and s.lower() in ("true", "false"):
        return s.lower() == "true"
    if tp is int and _INT.fullmatch(s):
        return int(s)
    if tp is float and (_INT.fullmatch(s) or _FLOAT.fullmatch(s)):
        return float(s)
    return text


def _nested_type(key: str) -> Any:
    """The type of a key inside a nested section (fleet.router.port), so env/--set text parses like the rest."""
    parent, _, leaf = key.rpartition(".")
    o = BY_KEY.get(parent)
    model = NESTED.get(o.type) if o is not None and isinstance(o.type, str) else None
    if model is None or leaf not in model.model_fields:
        return str
    return model.model_fields[leaf].annotation


def lora_entries(cfg: UserConfig) -> list[tuple[str | None, str]]:
    """(name, path) of every lora.paths entry."""
    out = []
    for item in cfg.lora.paths:
        if isinstance(item, str):
            out.append((None, item))
        else:
            out.append((item.name, item.path))
    return out


def adapter_config_dirs(cfg: UserConfig) -> list[str]:
    """Where `adapter_config.json` for moe_lora rank/alpha may live, in the order it is looked for:
    the moe_lora path itself (an adapter dir), the lora.paths dirs (the seed's PEFT checkpoint),
    then the directory holding a converted moe_lora file."""
    dirs: list[str] = []
    if cfg.moe_lora is not None:
        dirs.append(cfg.moe_lora.path)
    dirs.extend(p for _, p in lora_entries(cfg))
    if cfg.moe_lora is not None:
        dirs.append(posixpath.dirname(cfg.moe_lora.path.rstrip("/")) or ".")
    seen, ordered = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            ordered.append(d)
    return ordered
