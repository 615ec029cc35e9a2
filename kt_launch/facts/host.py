"""Host facts: cores, NUMA, ISA flags, memory and GPUs, read once at the edge.

`gather_host()` reads /proc, /sys, psutil and nvidia-smi; `host_from_json()` reads a recorded
file (`--host-facts`). Missing sources degrade to notes (info findings), never a crash.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from kt_launch.core.host import CpuFacts, GpuFacts, HostFacts, NumaNode
from kt_launch.facts.cgroup import parse_cpulist, read_cgroup
from kt_launch.facts.worker import die_with_parent
from kt_launch.core.validation import error_text


def host_from_json(data: Any, source: str = "file") -> HostFacts:
    """Parse the host-facts format. Raises ValueError naming the bad field."""
    from kt_launch.facts.host_schema import HostFactsFile

    f = HostFactsFile.model_validate(data)
    cpus = tuple(f.cpu.usable_cpus) or tuple(range(f.cpu.logical_cpus))
    cpu = CpuFacts(
        model=f.cpu.model,
        physical_cores=f.cpu.physical_cores,
        logical_cpus=f.cpu.logical_cpus,
        usable_cpus=cpus,
        flags=frozenset(x.lower() for x in f.cpu.flags),
        usable_physical_cores=f.cpu.usable_physical_cores,
    )
    sizes = [n.memory_bytes for n in f.numa]
    if sizes and all(x == 0 for x in sizes):  # no node has memory: recorded before unknown was null (it wrote 0)
        sizes = [None] * len(sizes)
    numa = tuple(NumaNode(n.id, tuple(n.cpus), size) for n, size in zip(f.numa, sizes))
    gpus = tuple(GpuFacts(g.index, g.name, g.memory_bytes, g.uuid, g.numa_node, g.used_bytes) for g in f.gpus)
    mems = None if f.memory.allowed_nodes is None else tuple(f.memory.allowed_nodes)
    return HostFacts(cpu, numa, f.memory.total_bytes, f.memory.available_bytes, gpus, source=source, local=False,
                     cpus_source=f.cpu.usable_cpus_source or "recorded usable_cpus", memory_nodes=mems,
                     memory_nodes_source=f.memory.allowed_nodes_source if mems is not None else "")


def load_host_facts(path: str | os.PathLike, flag: str = "--host-facts") -> HostFacts:
    """Read a `--host-facts` file through the bounded reader. Raises ValueError naming the file and field."""
    from kt_launch.facts.reader import HOST_FACTS, Missing, ReadError, read_json

    p = Path(path)
    try:
        data = read_json(p, HOST_FACTS)
    except Missing:
        raise ValueError(f"{flag} {p}: no such file; record one with `kt-launch doctor --json > {p.name}`") from None
    except ReadError as e:
        raise ValueError(f"{flag} {e.file}: {e.reason}") from None
    try:
        return host_from_json(data, source=str(p))
    except ValueError as e:  # pydantic ValidationError is a ValueError
        raise ValueError(f"{flag} {p}: {_short_validation(e)}") from None


def _short_validation(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        parts = []
        for err in errors()[:5]:
            loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err.get("loc", ())).lstrip(".")
            msg = error_text(err)
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(e)


# ---------------------------------------------------------------------------------------
# Gathering from this machine
# ---------------------------------------------------------------------------------------

def gather_host(env: dict[str, str] | None = None, root: str = "/") -> HostFacts:
    """This machine's facts; `root` other than "/" reads a recorded /proc and /sys tree instead (tests), where
    the counts and memory come from its proc/cpuinfo and proc/meminfo rather than psutil and the affinity call."""
    env = dict(os.environ if env is None else env)
    notes: list[str] = []
    rootp = Path(root)
    live = rootp.resolve() == Path("/")
    model, flags = _cpuinfo(rootp / "proc/cpuinfo", notes)
    group = read_cgroup(rootp)
    if live:
        logical = _psutil(psutil.cpu_count, notes, "CPU count", logical=True) or os.cpu_count() or 1
        physical = _psutil(psutil.cpu_count, notes, "physical core count", logical=False) or logical
        try:
            usable = tuple(sorted(os.sched_getaffinity(0)))
            cpus_source = "affinity mask"
        except (AttributeError, OSError):
            usable, cpus_source = tuple(range(logical)), "all CPUs (affinity unknown)"
        if group.cpus is not None and set(group.cpus) == set(usable):
            cpus_source = group.cpus_source  # the affinity is what the cgroup gave: say where it came from
        total, available = _memory(notes)
    else:
        logical, physical = _recorded_counts(rootp / "proc/cpuinfo")
        usable, cpus_source = (group.cpus, group.cpus_source) if group.cpus else (tuple(range(logical)), "all CPUs")
        logical = max(logical, len(usable))
        physical = min(physical or logical, logical)
        total, available = _recorded_memory(rootp / "proc/meminfo")
    usable_phys = _usable_physical(rootp, usable, notes)
    quota = group.quota_cpus
    if quota is not None and usable_phys is not None and quota < usable_phys:
        notes.append(f"cgroup CPU quota allows {quota} CPUs; usable physical cores capped from {usable_phys}")
        usable_phys = max(1, quota)
    # Unknown layout: say so, and record the assumption as one node (a --host-facts file never has numa: [])
    numa = _numa_nodes(rootp, notes) or (NumaNode(0, usable, total or None),)
    mems, mems_source = group.mems, group.mems_source
    if mems is not None and not set(mems) & {n.id for n in numa}:
        notes.append(f"{mems_source} names node(s) {list(mems)}, none of them a NUMA node here: ignored")
        mems, mems_source = None, ""
    elif mems is not None:
        mems = tuple(m for m in mems if m in {n.id for n in numa})
    gpus = _gpus(env, notes, rootp)
    cpu = CpuFacts(model, physical, logical, usable, flags, usable_phys)
    return HostFacts(cpu, numa, total, available, gpus, tuple(notes), cpus_source=cpus_source,
                     memory_nodes=mems, memory_nodes_source=mems_source)


def _recorded_counts(path: Path) -> tuple[int, int]:
    """(logical CPUs, physical cores) from a recorded cpuinfo: `processor` lines, distinct (physical id, core id)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 1, 1
    logical, cores, pkg = 0, set(), ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "processor":
            logical += 1
        elif key == "physical id":
            pkg = val.strip()
        elif key == "core id":
            cores.add((pkg, val.strip()))
    return max(1, logical), max(1, len(cores) or logical)


def _recorded_memory(path: Path) -> tuple[int, int]:
    vals = {}
    try:
        for line in path.read_text(errors="replace").splitlines():
            key, _, val = line.partition(":")
            if val.split():
                vals[key.strip()] = int(val.split()[0]) * 1024
    except (OSError, ValueError):
        return 0, 0
    total = vals.get("MemTotal", 0)
    return total, min(total, vals.get("MemAvailable", total))


def _psutil(fn, notes: list[str], what: str, **kw):
    """A psutil call, or None with a note: without /proc (a minimal container) psutil raises OSError."""
    try:
        return fn(**kw)
    except (OSError, RuntimeError, ValueError) as e:
        notes.append(f"psutil could not read the {what} ({e.__class__.__name__}: {e}); is /proc mounted?")
        return None


def _memory(notes: list[str]) -> tuple[int, int]:
    """RAM total and available: psutil (/proc/meminfo), else sysconf (the sysinfo call, which needs no /proc)."""
    vm = _psutil(psutil.virtual_memory, notes, "memory size")
    if vm is not None:
        return int(vm.total), int(vm.available)
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (OSError, ValueError, AttributeError):
        notes.append("memory size unknown: RAM checks see 0 bytes")
        return 0, 0
    notes.append("memory from sysconf: available RAM counts free pages only (no page cache), so it is low")
    return max(0, total), max(0, min(free, total))


def _cpuinfo(path: Path, notes: list[str]) -> tuple[str, frozenset[str]]:
    model, flags = "unknown", set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        notes.append(f"{path} not readable: CPU flags unknown")
        return model, frozenset()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = val.strip()
        elif key == "flags":  # every flags line: hybrid CPUs can differ per core
            flags.update(val.lower().split())
    return model, frozenset(flags)


def _usable_physical(root: Path, usable: tuple[int, ...], notes: list[str]) -> int | None:
    cores = set()
    for cpu in usable:
        topo = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            pkg = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            notes.append("CPU topology not readable under /sys: usable physical cores estimated from the ratio")
            return None
        cores.add((pkg, core))
    return len(cores) or None


def _numa_nodes(root: Path, notes: list[str]) -> tuple[NumaNode, ...]:
    base = root / "sys/devices/system/node"
    nodes = []
    try:
        entries = sorted(base.glob("node[0-9]*"), key=lambda p: int(p.name[4:]))
    except OSError:
        entries = []
    for d in entries:
        try:
            cpus = parse_cpulist((d / "cpulist").read_text())
        except (OSError, ValueError):
            cpus = ()
        mem = None  # unknown unless meminfo says (MemTotal: 0 kB = a node without memory)
        try:
            for line in (d / "meminfo").read_text().splitlines():
                if "MemTotal:" in line:
                    mem = int(line.split()[-2]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        nodes.append(NumaNode(int(d.name[4:]), cpus, mem))
    if not nodes:
        notes.append(f"{base} not readable: assuming one NUMA node")
    return tuple(nodes)


def _boot_id(root: Path) -> str | None:
    try:
        return (root / "proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _gpus(env: dict[str, str], notes: list[str], root: Path = Path("/")) -> tuple[GpuFacts, ...]:
    """GPUs from nvidia-smi (50-200 ms), cached per boot: the set of GPUs does not change while up.

    The cache entry is checked like any other input: one of the wrong shape, or with a line that does not
    parse, is a warning and a fresh nvidia-smi run, never a crash or a GPU of NaN bytes."""
    from kt_launch.facts.cache import cache_dir, read_json, warn_unusable, write_json

    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if not smi:
        notes.append("nvidia-smi not found: no GPUs seen")
        return ()
    boot = _boot_id(root)
    folder = cache_dir(env) if boot else None
    entry = folder / "gpus.json" if folder is not None else None
    cached = read_json(entry) if entry is not None else None
    all_gpus = None
    if isinstance(cached, dict) and cached.get("boot_id") == boot and cached.get("smi") == smi \
            and cached.get("query") == GPU_QUERY:
        out = cached.get("out")
        all_gpus, bad = parse_smi(out, root) if isinstance(out, str) else (None, "'out' is not nvidia-smi's text")
        if bad:
            warn_unusable(entry, bad)
            all_gpus = None
    elif cached is not None and not isinstance(cached, dict):
        warn_unusable(entry, "not a JSON object")
    if all_gpus is None:
        try:
            out = subprocess.run(
                [smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True, preexec_fn=die_with_parent(),
            ).stdout
        except (OSError, subprocess.SubprocessError, UnicodeDecodeError) as e:
            notes.append(f"nvidia-smi failed ({e.__class__.__name__}): no GPUs seen")
            return ()
        all_gpus, bad = parse_smi(out, root)
        if bad:
            notes.append(f"nvidia-smi: {bad}; that GPU is left out")
        elif entry is not None:
            write_json(entry, {"boot_id": boot, "smi": smi, "query": GPU_QUERY, "out": out})
    return filter_visible(_with_used(smi, all_gpus, notes), env.get("CUDA_VISIBLE_DEVICES"), notes)


GPU_QUERY = "index,name,memory.total,uuid,pci.bus_id"
USED_QUERY = "index,memory.used"  # not cached: other processes' memory changes while the host is up


def _with_used(smi: str, gpus: list[GpuFacts], notes: list[str]) -> list[GpuFacts]:
    """The GPUs with nvidia-smi's memory.used, read live (SGLang sizes against the memory free when it starts,
    sglang/srt/model_executor/model_runner.py:402, 907-932). A failed query is a note and 0 used."""
    if not gpus:
        return gpus
    try:
        out = subprocess.run([smi, f"--query-gpu={USED_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True,
                             preexec_fn=die_with_parent()).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError) as e:
        notes.append(f"nvidia-smi memory.used failed ({e.__class__.__name__}): GPU memory in use not counted")
        return gpus
    used, bad = parse_used(out, {g.index: g.memory_bytes for g in gpus})
    if bad:
        notes.append(f"nvidia-smi memory.used: {bad}; that GPU's memory in use is not counted")
    return [replace(g, used_bytes=used.get(g.index, 0)) for g in gpus]


def parse_used(out: str, sizes: dict[int, int]) -> tuple[dict[int, int], str | None]:
    """`index, memory.used` lines (MiB) -> {index: bytes}, and the first line that is not one (NaN, [N/A], a
    negative, more than the GPU's size, an unknown index): that GPU is left at 0."""
    used: dict[int, int] = {}
    bad = None
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        why = None
        try:
            index, mib = int(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            why = "is not an index and a size"
        else:
            n = int(mib) * 1024 * 1024 if math.isfinite(mib) else -1
            if index not in sizes or index in used:
                why = f"names GPU index {index} of no GPU, or twice"
            elif not 0 <= n <= sizes[index]:
                why = f"has memory used {parts[1][:20]}"
            else:
                used[index] = n
        if why and bad is None:
            bad = f"line {line[:60]!r} {why}"
    return used, bad


def parse_gpu_csv(out: str, root: Path = Path("/")) -> list[GpuFacts]:
    """nvidia-smi's CSV lines -> GPUs, each with the NUMA node its PCI device reports in sysfs."""
    return parse_smi(out, root)[0]


def parse_smi(out: str, root: Path = Path("/")) -> tuple[list[GpuFacts], str | None]:
    """GPUs from `nvidia-smi --query-gpu=GPU_QUERY --format=csv,noheader,nounits`, and the first line that is
    not one (a size of NaN, inf or [N/A], a negative, a duplicate index): that line is left out."""
    gpus: list[GpuFacts] = []
    bad = None
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        why = None
        if len(parts) < 4:
            why = "has fewer than 4 fields"
        else:
            try:
                index, mib = int(parts[0]), float(parts[2])
            except ValueError:
                why = "has a non-numeric index or memory size"
            else:
                if not (0 <= index < 1024):
                    why = f"has GPU index {index}"
                elif not (math.isfinite(mib) and 1 <= mib < 1 << 40):  # 0 MiB: nothing to size with
                    why = f"has memory size {parts[2][:20]}"
                elif any(g.index == index for g in gpus):
                    why = f"repeats GPU index {index}"
                else:
                    gpus.append(GpuFacts(index, parts[1], int(mib) * 1024 * 1024, parts[3],
                                         gpu_numa_node(parts[4], root) if len(parts) > 4 else None))
        if why and bad is None:
            bad = f"line {line[:60]!r} {why}"
    return gpus, bad


def sysfs_pci_address(bus_id: str) -> str | None:
    """nvidia-smi's bus id (`00000000:17:00.0`, 8-digit domain, upper case) -> sysfs's name (`0000:17:00.0`)."""
    domain, sep, rest = bus_id.strip().lower().partition(":")
    if not sep or not rest or not all(c in "0123456789abcdef" for c in domain) or not domain:
        return None
    return f"{int(domain, 16):04x}:{rest}"


def gpu_numa_node(bus_id: str, root: Path = Path("/")) -> int | None:
    """/sys/bus/pci/devices/<addr>/numa_node; -1 (no affinity, or a one-node host) and unreadable -> None."""
    addr = sysfs_pci_address(bus_id)
    if addr is None or "/" in addr:
        return None
    try:
        node = int((root / "sys/bus/pci/devices" / addr / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def filter_visible(gpus: list[GpuFacts], visible: str | None, notes: list[str]) -> tuple[GpuFacts, ...]:
    """Apply CUDA_VISIBLE_DEVICES (indices or UUIDs, order kept) and renumber as CUDA does."""
    if visible is None:
        return tuple(gpus)
    picked: list[GpuFacts] = []
    for item in [x.strip() for x in visible.split(",") if x.strip()]:
        match = None
        if item.lstrip("-").isdigit():
            idx = int(item) if len(item) <= 18 else 1 << 62  # past any GPU (and Python's digit limit)
            if idx < 0:
                notes.append(f"CUDA_VISIBLE_DEVICES entry {item!r} is negative (no GPU); CUDA ignores it and all "
                             "after it")
                break  # CUDA stops at the first invalid entry
            match = next((g for g in gpus if g.index == idx), None)
        else:
            match = next((g for g in gpus if g.uuid and (g.uuid == item or g.uuid.startswith(item))), None)
        if match is None:
            notes.append(f"CUDA_VISIBLE_DEVICES entry {item!r} matches no GPU; CUDA ignores it and all after it")
            break
        picked.append(match)
    return tuple(replace(g, index=i) for i, g in enumerate(picked))


def seconds_since_start() -> float | None:
    """How long this process has run (its start as the kernel records it, so the interpreter's start and the
    imports count): what `kt-launch convert --json` reports as the launcher's own time before its worker."""
    import time

    try:
        return max(0.0, time.time() - psutil.Process().create_time())
    except psutil.Error:
        return None
