"""`kt-launch doctor`: verdicts about a host. Facts are read at the edge (`gather_doctor_facts`); the
verdicts are a pure function of them (`doctor_findings`), so every rule is testable with literals.

Exit 0 only when no verdict is an error (unlike `kt doctor`, which always exits 0).
Codes: KT-E5xx errors, KT-W5xx warnings, KT-I5xx information.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from kt_launch.core.host import HostFacts
from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.output import SCHEMA_VERSION
from kt_launch.resolve.isa import OVERRIDE_ENV, choose_variant
from kt_launch.resolve.verdicts import no_kt_flags, variant_override, wrapper_call_incompatible

GiB = 1 << 30
MIN_TOTAL_MEMORY = 32 * GiB  # the same floor `kt doctor` uses


@dataclass(frozen=True)
class LocalFacts:
    """Facts about *this* machine beyond HostFacts; None where unknown or not this machine."""

    python: str | None = None
    sglang_origin: str | None = None  # where find_spec found `sglang`; "" = not found; None = not checked
    sglang_dists: tuple[tuple[str, str], ...] = ()  # (distribution, version) of sglang / sglang-kt
    kt_kernel_origin: str | None = None
    numa_balancing: str | None = None  # content of /proc/sys/kernel/numa_balancing
    cpu_variant_override: str | None = None  # KT_KERNEL_CPU_VARIANT
    notes: tuple[str, ...] = field(default=())


def _origin(name: str) -> str:
    try:
        spec = importlib.util.find_spec(name)  # never imports the package itself
    except (ImportError, ValueError):
        return ""
    if spec is None:
        return ""
    return spec.origin or (list(spec.submodule_search_locations or [""])[0]) or "(namespace package)"


def _dists() -> tuple[tuple[str, str], ...]:
    out = []
    for name in ("sglang-kt", "sglang"):
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            pass
        except Exception:  # broken metadata must not break doctor
            pass
    return tuple(out)


def gather_doctor_facts(environ: Mapping[str, str] | None = None, root: str = "/") -> LocalFacts:
    environ = os.environ if environ is None else environ
    try:
        nb = (Path(root) / "proc/sys/kernel/numa_balancing").read_text().strip()
    except OSError:
        nb = None
    return LocalFacts(
        python=sys.executable,
        sglang_origin=_origin("sglang"),
        sglang_dists=_dists(),
        kt_kernel_origin=_origin("kt_kernel"),
        numa_balancing=nb,
        cpu_variant_override=environ.get(OVERRIDE_ENV),
    )


def doctor_findings(host: HostFacts, local: LocalFacts | None) -> list[Finding]:
    """Verdicts. `local` is None when judging a recorded host (`--host-facts`): only HostFacts are judged."""
    out: list[Finding] = []
    out += _cpu_variant(host, local)
    if local is not None:
        out += _sglang(local)
        out += _numa_balancing(local)
    out += _memory(host)
    out += _gpus(host)
    out += _cores(host)
    out += [info("KT-I510", f"host facts: {n}") for n in host.notes]
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.level])


def _cpu_variant(host: HostFacts, local: LocalFacts | None) -> list[Finding]:
    flags = host.cpu.flags
    override = local.cpu_variant_override if local is not None else None
    ch = choose_variant(flags, override)
    out: list[Finding] = []
    if not flags:
        return [warning("KT-W501", "CPU flags unknown: cannot tell which kt-kernel variant this CPU gets",
                        "check that /proc/cpuinfo is readable (or the cpu.flags of the --host-facts file)")]
    if ch.override_ignored is not None:
        out.append(variant_override(ch, "the environment's", host.source))
    if ch.override is not None:
        if ch.missing:
            out.append(variant_override(ch, "the environment's", host.source))
        else:
            out.append(info("KT-I501", f"kt-kernel variant: {ch.variant} (forced by {OVERRIDE_ENV}; the CPU "
                            f"would get {ch.detected})"))
        return out
    if not ch.has_avx2:
        out.append(error("KT-E501", "the CPU has no AVX2: kt-kernel's lowest variant (avx2) cannot run here",
                         "run the CPU experts on an x86-64 CPU with AVX2 or better (AVX-512/AMX recommended)"))
    elif ch.variant == "avx2":
        out.append(warning("KT-W503", "kt-kernel variant: avx2 (no AVX-512): AMXINT4/AMXINT8 and FP8_PERCHANNEL are "
                           "unavailable, and INT8 kernels are unsupported",
                           "use a method that avx2 supports (e.g. BF16, LLAMAFILE), or an AVX-512/AMX CPU"))
    elif ch.variant != "amx":
        out.append(info("KT-I501", f"kt-kernel variant: {ch.variant} (no AMX: AMX* methods run without AMX tiles or "
                        "are unavailable)"))
    else:
        out.append(info("KT-I501", "kt-kernel variant: amx (AMX tiles, best for AMXINT4/AMXINT8/AMXBF16)"))
    return out


def _sglang(local: LocalFacts) -> list[Finding]:
    out: list[Finding] = []
    py = local.python or "this interpreter"
    if local.sglang_origin is None:
        pass
    elif local.sglang_origin:
        dists = ", ".join(f"{d} {v}" for d, v in local.sglang_dists) or "no distribution metadata"
        flavour = "sglang-kt (KTransformers fork)" if any(d == "sglang-kt" for d, _ in local.sglang_dists) else \
            "upstream sglang or a source checkout" if local.sglang_dists else "unknown (no metadata)"
        out.append(info("KT-I502", f"SGLang importable in {py}: {local.sglang_origin} ({dists}; flavour: {flavour})"))
    else:
        out.append(warning("KT-W504", f"no SGLang importable in {py}",
                           "set runtime.python in the profile to an interpreter that has sglang-kt, or "
                           "`pip install sglang-kt`"))
    if local.kt_kernel_origin is None:
        pass
    elif local.kt_kernel_origin:
        out.append(info("KT-I503", f"kt_kernel importable in {py}: {local.kt_kernel_origin}"))
    else:
        out.append(warning("KT-W505", f"no kt_kernel importable in {py}",
                           "use an interpreter that has kt-kernel (runtime.python), or `pip install kt-kernel`"))
    return out


CAPABILITIES = (("--kt-numa-nodes", "NUMA binding"), ("--kt-gpu-experts-ratio", "GPU-expert ratio"),
                ("--kt-expert-lora-path", "expert LoRA (sglang-kt)"), ("--kt-moe-lora-path", "MoE-LoRA flags (seed fork)"),
                ("--disable-cuda-graph", "--disable-cuda-graph"), ("--disable-decode-cuda-graph", "per-phase CUDA graphs"))


def sglang_capabilities(facts) -> list[Finding]:
    """Verdicts on an inspected SGLang (`kt_launch.facts.sglang.SglangFacts`): flavour, versions, capabilities."""
    if facts.error_kind == "interpreter_missing":
        return [error("KT-E513", f"--python {facts.python} cannot be run: {facts.error}",
                      "give the path of an existing interpreter (e.g. /opt/sglang/bin/python)")]
    if not facts.ok:
        return [warning("KT-W511", f"SGLang in {facts.python} could not be inspected: {facts.error}",
                        "install sglang-kt into that interpreter, or point --python / runtime.python elsewhere")]
    kt_flags = sorted(f for f in facts.flags if f.startswith("--kt-"))
    has = [label for flag, label in CAPABILITIES if facts.has_flag(flag)]
    lacks = [label for flag, label in CAPABILITIES if not facts.has_flag(flag)]
    out = [info("KT-I511", f"SGLang in {facts.python}: {facts.describe()}; flavour {facts.flavor or 'none (no kt flags)'}; "
                f"{len(kt_flags)} --kt-* flags; has: {', '.join(has) or 'nothing kt-specific'}; "
                f"lacks: {', '.join(lacks) or 'nothing'}")]
    if facts.flavor is None:
        out.append(no_kt_flags(facts))
    elif (verdict := wrapper_call_incompatible(facts)) is not None:
        out.append(verdict)
    return out


def _numa_balancing(local: LocalFacts) -> list[Finding]:
    v = local.numa_balancing
    if v is None:
        return [info("KT-I504", "NUMA balancing unknown (/proc/sys/kernel/numa_balancing not readable)")]
    if v not in ("0", ""):
        return [warning("KT-W506", f"automatic NUMA balancing is on (kernel.numa_balancing={v}): the kernel migrates "
                        "kt-kernel's expert weights and threads between nodes, costing throughput",
                        "sysctl kernel.numa_balancing=0")]
    return [info("KT-I504", "automatic NUMA balancing is off")]


def _memory(host: HostFacts) -> list[Finding]:
    total, avail = host.memory_total_bytes, host.memory_available_bytes
    shown = f"{total / GiB:.1f} GiB total, {avail / GiB:.1f} GiB available"
    if total <= 0:
        return [warning("KT-W507", "memory size unknown", "check /proc/meminfo (or memory.total_bytes in the file)")]
    out = []
    if total < MIN_TOTAL_MEMORY:
        out.append(warning("KT-W507", f"memory: {shown}; CPU experts of MoE models usually need more than "
                           f"{MIN_TOTAL_MEMORY // GiB} GiB", "use a smaller model or a host with more RAM"))
    elif avail < total * 0.1:
        out.append(warning("KT-W508", f"memory: {shown}; less than 10% is available for expert weights",
                           "stop other memory users before launching"))
    else:
        out.append(info("KT-I505", f"memory: {shown}"))
    return out


def _gpus(host: HostFacts) -> list[Finding]:
    if not host.gpus:
        return [warning("KT-W509", "no GPU visible: SGLang needs a CUDA GPU for attention and the GPU experts",
                        "check nvidia-smi and CUDA_VISIBLE_DEVICES")]
    listed = ", ".join(f"{g.index}: {g.name} ({g.memory_bytes / GiB:.0f} GiB"
                       + (f", {g.used_bytes / GiB:.1f} GiB in use" if g.used_bytes else "") + ")" for g in host.gpus)
    return [info("KT-I506", f"GPUs: {listed}")]


def _cores(host: HostFacts) -> list[Finding]:
    pools = [n.id for n in host.cpu_numa_nodes]
    msg = (f"CPU: {host.cpu.model}: {host.usable_physical_cores} usable physical cores of {host.cpu.physical_cores}, "
           f"NUMA nodes with CPUs: {pools}")
    if host.usable_physical_cores < 2:
        return [warning("KT-W510", msg + "; one core leaves nothing for SGLang's scheduler",
                        "give the process more cores (affinity mask, cgroup quota)")]
    return [info("KT-I507", msg)]


def run_doctor(args) -> int:
    """`kt-launch doctor [--json] [--host-facts FILE]`: 0 when no verdict is an error, else 3."""
    import json

    from kt_launch.core.errors import ConfigError
    from kt_launch.facts.host import gather_host, load_host_facts
    from kt_launch.render.text import findings_text

    if getattr(args, "host_facts", None):
        try:
            host = load_host_facts(args.host_facts)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        local = None
    else:
        host = gather_host()
        local = gather_doctor_facts()
        if getattr(args, "python", None):  # judge the interpreter given, not the one running kt-launch
            local = replace(local, python=args.python, sglang_origin=None, kt_kernel_origin=None)
    findings = doctor_findings(host, local)
    record = _model_record(args.model) if getattr(args, "model", None) else None
    if getattr(args, "python", None):
        from kt_launch.facts.sglang import read_sglang_facts

        findings += sglang_capabilities(read_sglang_facts(args.python))
    code = 3 if any(f.level == "error" for f in findings) else 0
    if args.json:
        doc = {"schema_version": SCHEMA_VERSION, **host.to_json()}
        if record is not None:
            doc["model_facts"] = record
        doc["findings"] = [f.to_json() for f in findings]
        print(json.dumps(doc, indent=2))
        return code
    c = host.cpu
    print(f"host:   {host.source}")
    print(f"cpu:    {c.model}: {c.physical_cores} physical cores, {c.logical_cpus} logical CPUs, "
          f"{host.usable_physical_cores} usable physical cores")
    print(f"numa:   {len(host.numa)} node(s); with CPUs: {[n.id for n in host.cpu_numa_nodes]}")
    print(f"memory: {host.memory_total_bytes / GiB:.1f} GiB total, {host.memory_available_bytes / GiB:.1f} GiB "
          "available")
    print(f"gpus:   {', '.join(f'{g.index}: {g.name}' for g in host.gpus) or 'none'}")
    if record is not None:
        w = record["weights"]
        size = f"{sum(w['expert_by_layer'].values()) / GiB:.1f} GiB of routed experts" if w else "no safetensors headers"
        print(f"model:  {record['path']}: {record['config'].get('model_type', '?')}, {size} "
              "(record it for --model-facts with --json)")
    if local is None:
        print("(recorded host: the interpreter, SGLang and sysctl checks are skipped)")
    print()
    sys.stdout.write(findings_text(findings))
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    print(f"\nverdict: {'FAIL' if errors else 'OK'}: {errors} error(s), {warnings} warning(s)")
    return code


def _model_record(path: str) -> dict:
    """`doctor --model DIR`: the model facts --model-facts reads (facts/model_record.py); a bad dir is exit 2."""
    from kt_launch.core.errors import ConfigError
    from kt_launch.facts.model import ModelConfigError
    from kt_launch.facts.model_record import record_model

    try:
        return record_model(path)
    except ModelConfigError as e:
        raise ConfigError(f"--model: {e}") from None
