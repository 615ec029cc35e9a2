"""The installed SGLang as its own parser describes it: flags, versions, kt-kernel capabilities. Plain values.

facts/sglang.py reads them (a worker in runtime.python, cached); resolve reads these types (flavour, accepted flags).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from kt_launch.core.sglang_config import ConfigMerger

@dataclass(frozen=True)
class OptionInfo:
    """One argparse action of SGLang's parser, as the worker described it. Values are JSON:
    a default that is not JSON-native arrives as ``{"__repr__": ..., "__type__": ...}``."""

    option_strings: tuple[str, ...]
    dest: str
    action: str  # argparse action class name: _StoreAction, _StoreTrueAction, DeprecatedStoreTrueAction, ...
    type: str | None = None  # the type callable's name: int, str, float, nullable_str, ...
    default: Any = field(default=None, hash=False)
    choices: tuple[Any, ...] | None = field(default=None, hash=False)
    nargs: int | str | None = None
    const: Any = field(default=None, hash=False)
    required: bool = False
    help: str | None = None  # first 200 characters
    metavar: Any = field(default=None, hash=False, compare=False)
    deprecated: bool = False

    @property
    def flag(self) -> str:
        """The canonical spelling: the first ``--long`` option string."""
        for s in self.option_strings:
            if s.startswith("--"):
                return s
        return self.option_strings[0] if self.option_strings else self.dest

    @property
    def takes_value(self) -> bool:
        """False for store_true/store_false/count/help-style switches (``nargs == 0``)."""
        return self.nargs != 0

    @property
    def is_list(self) -> bool:
        return self.nargs in ("+", "*") or (isinstance(self.nargs, int) and self.nargs > 1)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OptionInfo:
        choices = d.get("choices")
        return cls(
            option_strings=tuple(d.get("option_strings") or ()),
            dest=str(d["dest"]),
            action=str(d.get("action") or ""),
            type=d.get("type"),
            default=d.get("default"),
            choices=tuple(choices) if isinstance(choices, list) else None,
            nargs=d.get("nargs"),
            const=d.get("const"),
            required=bool(d.get("required", False)),
            help=d.get("help"),
            metavar=d.get("metavar"),
            deprecated=bool(d.get("deprecated", False)),
        )


_EMPTY: Mapping[str, OptionInfo] = MappingProxyType({})


@dataclass(frozen=True)
class SglangFacts:
    """The installed SGLang as its own parser describes it. ``error`` set means nothing else
    is known (``options`` is empty); it is a message for a person, ``error_kind`` one of
    ``interpreter_missing``, ``not_installed``, ``import_failed``, ``parser_failed``,
    ``timeout``, ``worker_failed``."""

    python: str
    distribution: str | None = None  # "sglang-kt" | "sglang" | another fork's name
    version: str | None = None
    kt_kernel_version: str | None = None  # None: kt-kernel not installed in that interpreter
    # KTMoEWrapper.__new__ has a gpu_experts_mask parameter (kt-kernel 0.7.x); None: unknown.
    kt_wants_gpu_experts_mask: bool | None = None
    options: Mapping[str, OptionInfo] = field(default_factory=lambda: _EMPTY, hash=False)  # every option string -> its action
    error: str | None = None
    error_kind: str | None = None
    # ...and gpu_experts_mask has no default (so a caller that omits it fails).
    kt_gpu_experts_mask_required: bool | None = None
    kt_wrapper_params: tuple[str, ...] = ()
    # SGLang's own KTMoEWrapper(...) call supplies every parameter the installed kt-kernel
    # requires (False for upstream sglang 0.5.23 + kt-kernel 0.7.2); None: cannot tell.
    kt_wrapper_call_compatible: bool | None = None
    kt_wrapper_call_missing: tuple[str, ...] = ()
    python_version: str | None = None
    sglang_path: str | None = None
    warnings: tuple[str, ...] = ()
    # SGLang's own --config reader (core/sglang_config.py); None: this SGLang has none, or it was not recorded.
    config_merger: ConfigMerger | None = field(default=None, hash=False)
    # Whether sglang.launch_server's parser takes abbreviated flags (argparse allow_abbrev); None: unknown.
    allow_abbrev: bool | None = None
    from_cache: bool = field(default=False, compare=False)
    seconds: float | None = field(default=None, compare=False)  # the worker's own run time

    # -- queries --------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.error is None

    def has_flag(self, flag: str) -> bool:
        return flag in self.options

    def option(self, flag: str) -> OptionInfo | None:
        return self.options.get(flag)

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(self.options)

    @property
    def by_dest(self) -> Mapping[str, OptionInfo]:
        """dest -> OptionInfo (the first action for a dest when several share it)."""
        out: dict[str, OptionInfo] = {}
        for info in self.options.values():
            out.setdefault(info.dest, info)
        return MappingProxyType(out)

    @property
    def flavor(self) -> str | None:
        """Which kt flavour this SGLang is, from its distribution name and the flags its parser accepts."""
        if not self.ok:
            return None
        flags = self.options
        if "--kt-moe-lora-path" in flags:
            return "kt-moe-lora"
        if self.distribution == "sglang-kt" or "--kt-expert-lora-path" in flags:
            return "sglang-kt"
        if "--kt-weight-path" in flags:
            return "sglang"
        return None

    def describe(self) -> str:
        if self.error:
            return f"{self.python}: {self.error}"
        kk = f", kt-kernel {self.kt_kernel_version}" if self.kt_kernel_version else ", no kt-kernel"
        return f"{self.distribution} {self.version}{kk} ({self.python})"

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_worker_json(
        cls, python: str, data: Mapping[str, Any], *, from_cache: bool = False
    ) -> SglangFacts:
        """Build from the worker's ``facts`` output (also what tests/data/parser_*.json hold)."""
        kt = data.get("kt_kernel") or {}
        calls = data.get("kt_wrapper_calls") or {}
        common = dict(
            python=python,
            distribution=data.get("distribution"),
            version=data.get("version"),
            kt_kernel_version=kt.get("version"),
            kt_wants_gpu_experts_mask=kt.get("wants_gpu_experts_mask"),
            kt_gpu_experts_mask_required=kt.get("gpu_experts_mask_required"),
            kt_wrapper_params=tuple(kt.get("wrapper_params") or ()),
            kt_wrapper_call_compatible=calls.get("compatible"),
            kt_wrapper_call_missing=tuple(calls.get("missing_required") or ()),
            python_version=data.get("python_version"),
            sglang_path=data.get("sglang_path"),
            warnings=tuple(data.get("warnings") or ()),
            config_merger=ConfigMerger.from_json(data.get("config_merger")),
            allow_abbrev=data.get("allow_abbrev") if isinstance(data.get("allow_abbrev"), bool) else None,
            from_cache=from_cache,
            seconds=data.get("seconds"),
        )
        if not data.get("ok"):
            return cls(
                error=worker_error_message(python, data),
                error_kind=str(data.get("error_kind") or "worker_failed"),
                **common,
            )
        options: dict[str, OptionInfo] = {}
        for raw in data.get("options") or ():
            info = OptionInfo.from_json(raw)
            for s in info.option_strings:
                options.setdefault(s, info)
        return cls(options=MappingProxyType(options), **common)

    @classmethod
    def failed(cls, python: str, kind: str, message: str) -> SglangFacts:
        return cls(python=python, error=message, error_kind=kind)


def worker_error_message(python: str, data: Mapping[str, Any]) -> str:
    kind = data.get("error_kind")
    msg = str(data.get("error") or "the SGLang introspection worker failed")
    if kind == "import_failed":
        tb = str(data.get("traceback") or "").strip().splitlines()
        last = tb[-1] if tb else ""
        hint = (
            f"{python} has sglang but cannot import sglang.srt.server_args; "
            "a dependency of SGLang is missing or broken in that environment"
        )
        return f"{hint}: {msg}" + (f" (last line: {last})" if last and last not in msg else "")
    if kind == "not_installed":
        return msg
    return msg
