"""`kt-launch doctor`'s verdicts: a pure function of HostFacts and LocalFacts (and an inspected SGLang),
so every rule is testable with literals. Verdicts a plan gives too come from resolve/verdicts.py.

Doctor's own codes are KT-x50x/x51x (core/codes.py); the shared verdicts keep theirs (KT-x241, KT-E307, KT-E317).
"""

from __future__ import annotations

from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.core.host import HostFacts
from kt_launch.core.local import LocalFacts
from kt_launch.core.install import KT_KERNEL, InstallFacts, pip_line
from kt_launch.resolve.install import install_findings
from kt_launch.resolve.isa import OVERRIDE_ENV, choose_variant
from kt_launch.resolve.launch import launch_refusals, sglang_install_line
from kt_launch.resolve.verdicts import no_kt_flags, variant_override, wrapper_call_incompatible

GiB = 1 << 30
MIN_TOTAL_MEMORY = 32 * GiB  # the same floor `kt doctor` uses


def doctor_findings(host: HostFacts, local: LocalFacts | None, launch: bool = False, sglang=None,
                    install: InstallFacts | None = None) -> list[Finding]:
    """Verdicts. `local` is None when judging a recorded host (`--host-facts`): only HostFacts are judged.

    `launch`: judge a launch on this machine with local.python too, by the rule a launch uses
    (resolve/launch.launch_refusals: the same KT-E251/KT-E252) and the install gate (`sglang`: its inspected SGLang,
    `install`: the gate's facts), so doctor never says OK where `kt-launch --profile P` would refuse to start."""
    out: list[Finding] = []
    out += _cpu_variant(host, local)
    refusals = launch_refusals(local.python or "python", sglang, host) if launch and local is not None else []
    out += refusals
    out += install_findings(install) if launch else []
    if local is not None:
        out += [f for f in _sglang(local) if not (refusals and f.code == "KT-W504")]  # KT-E251 says it
        out += _numa_balancing(local)
    out += _memory(host)
    out += [f for f in _gpus(host) if not (refusals and f.code == "KT-W509")]  # KT-E252 says it
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
                           f"{sglang_install_line(local.python or 'python3')}"))
    if local.kt_kernel_origin is None:
        pass
    elif local.kt_kernel_origin:
        out.append(info("KT-I503", f"kt_kernel importable in {py}: {local.kt_kernel_origin}"))
    else:
        out.append(warning("KT-W505", f"no kt_kernel importable in {py}",
                           "use an interpreter that has kt-kernel (runtime.python), or "
                           f"{pip_line(local.python or 'python3', KT_KERNEL)}"))
    return out


CAPABILITIES = (("--kt-numa-nodes", "NUMA binding"), ("--kt-gpu-experts-ratio", "GPU-expert ratio"),
                ("--kt-expert-lora-path", "expert LoRA (sglang-kt)"), ("--kt-moe-lora-path", "MoE-LoRA flags (seed fork)"),
                ("--disable-cuda-graph", "--disable-cuda-graph"), ("--disable-decode-cuda-graph", "per-phase CUDA graphs"))


def sglang_capabilities(facts) -> list[Finding]:
    """Verdicts on an inspected SGLang (`kt_launch.core.sglang.SglangFacts`): flavour, versions, capabilities."""
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
    out = []
    if (mismatch := host.memory_mismatch) is not None:
        out.append(warning("KT-W730", f"NUMA node(s) {mismatch[0]} have usable CPUs but not memory, and memory "
                           f"node(s) {mismatch[1]} no usable CPU ({host.memory_nodes_source}: "
                           f"{list(host.memory_nodes or ())}); kt-kernel is planned on node(s) {pools}",
                           "give the container the CPUs and the memory of the same NUMA nodes"))
    if host.usable_physical_cores < 2:
        return out + [warning("KT-W510", msg + "; one core leaves nothing for SGLang's scheduler",
                              "give the process more cores (affinity mask, cgroup quota)")]
    return out + [info("KT-I507", msg)]
