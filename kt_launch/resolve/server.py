"""Server and runtime values: address, parallelism, interpreter, environment."""

from __future__ import annotations

from kt_launch.resolve.findings import Finding, error
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.plan import Resolved
from kt_launch.resolve.values import user_value


def resolve_server(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    s, prov = inp.config.server, inp.provenance
    values["server.host"] = user_value(prov, "server.host", s.host, "" if prov.of("server.host") else "loopback only")
    values["server.port"] = user_value(prov, "server.port", s.port)
    values["server.tp_size"] = (user_value(prov, "server.tp_size", s.tp_size) if s.tp_size is not None
                                else Resolved(1, "default", "one GPU; set server.tp_size for tensor parallelism"))
    for key in ("chunked_prefill_size", "max_running_requests", "mem_fraction_static", "api_key"):
        v = getattr(s, key)
        if v is not None:
            values[f"server.{key}"] = user_value(prov, f"server.{key}", v)
    if s.chunked_prefill_size is not None and s.chunked_prefill_size <= 0:
        out.append(error("KT-E131", f"server.chunked_prefill_size={s.chunked_prefill_size}: kt-kernel sizes its "
                         "buffers from it and rejects every forward when it is not positive",
                         "use a positive value such as 4096"))
    if s.extra_args:
        values["server.extra_args"] = user_value(prov, "server.extra_args", list(s.extra_args))


def resolve_runtime(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    r, prov = inp.config.runtime, inp.provenance
    values["runtime.python"] = (user_value(prov, "runtime.python", r.python) if r.python
                                else Resolved(inp.current_python, "default", "the interpreter running kt-launch"))
    if r.cuda_visible_devices is not None:
        values["runtime.cuda_visible_devices"] = user_value(prov, "runtime.cuda_visible_devices", r.cuda_visible_devices)
    if r.env:
        values["runtime.env"] = user_value(prov, "runtime.env", dict(r.env))
