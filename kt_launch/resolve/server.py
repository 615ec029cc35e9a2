"""Server and runtime values: address, parallelism, interpreter, environment."""

from __future__ import annotations

import re
from typing import Any

from kt_launch.resolve.steps import step
from kt_launch.core.findings import Finding, error
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.plan import Resolved
from kt_launch.resolve.values import user_value


@step(fills=("server.host", "server.tp_size", "server.disable_shared_experts_fusion"),
      reads=("runtime.flavor", "config"))
def resolve_server(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """Listen address, TP size (1 unless set), and flags the flavour needs for the kt experts."""
    s, prov = inp.config.server, inp.provenance
    values["server.host"] = user_value(prov, "server.host", s.host, "" if prov.of("server.host") else "loopback only")
    values["server.tp_size"] = (user_value(prov, "server.tp_size", s.tp_size) if s.tp_size is not None
                                else Resolved(1, "default", "one GPU; set server.tp_size for tensor parallelism"))
    if values["runtime.flavor"].value == "sglang":
        values["server.disable_shared_experts_fusion"] = Resolved(
            True, "derived", "upstream sglang does not turn shared-expert fusion off for kt-kernel by itself")
    if s.chunked_prefill_size is not None and s.chunked_prefill_size <= 0:
        out.append(error("KT-E131", f"server.chunked_prefill_size={s.chunked_prefill_size}: kt-kernel sizes its "
                         "buffers from it and rejects every forward when it is not positive",
                         "use a positive value such as 4096"))


@step(fills=("runtime.python",), reads=("config",))
def resolve_runtime(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """The interpreter that runs SGLang (runtime.python, else this one); runtime.env names checked."""
    r, prov = inp.config.runtime, inp.provenance
    values["runtime.python"] = (user_value(prov, "runtime.python", r.python) if r.python
                                else Resolved(inp.current_python, "default", "the interpreter running kt-launch"))
    if r.env:
        for problem in env_problems(r.env):
            out.append(error("KT-E132", problem + "; the server could not be started with it", "fix runtime.env"))


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_problems(env: dict[str, Any]) -> list[str]:
    """Why runtime.env cannot be given to a process: names must be identifiers, values text without NUL."""
    out = []
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(str(name)):
            out.append(f"runtime.env: {str(name)[:80]!r} is not a valid variable name (letters, digits and _)")
        elif not isinstance(value, str) or "\x00" in value:
            out.append(f"runtime.env.{name}: the value must be text without NUL bytes")
    return out
