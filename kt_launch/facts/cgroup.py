"""What the process's cgroup (and the kernel's view of the process) allows: usable CPUs, memory NUMA nodes, a
CPU quota. Read under a root directory, so tests feed recorded /proc and /sys trees.

Inside a pinned Kubernetes pod or a `docker run --cpuset-cpus/--cpuset-mems` container the CPUs *and* the
memory nodes are limited; kt-kernel binds its thread pools by NUMA id and `numactl --membind` to a node the
cgroup withholds fails, so the plan must follow both. Sources, most specific first:
- cgroup v2: `<mount>/<path from /proc/self/cgroup "0::">/cpuset.{cpus,mems}.effective`, `cpu.max`;
- cgroup v1: `<mount>/cpuset/<path of the cpuset line>/cpuset.effective_{cpus,mems}`, `cpu/cpu.cfs_quota_us`;
- `/proc/self/status` `Cpus_allowed_list` / `Mems_allowed_list` (the kernel's answer for this process).
Without a cgroup namespace /proc/self/cgroup names the host's path while the container's own cgroup is mounted
at the root, so each cgroup file is tried at the named path, then at the mount's root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CgroupView:
    cpus: tuple[int, ...] | None  # None = not learned here
    cpus_source: str
    mems: tuple[int, ...] | None
    mems_source: str
    quota_cpus: int | None  # whole CPUs of a CPU quota; None = no quota (or unknown)


def parse_cpulist(text: str) -> tuple[int, ...]:
    """A kernel list ("0-3,8,10-11") -> ids. Raises ValueError on anything else."""
    out: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
            if hi < lo or hi - lo > 1 << 16:
                raise ValueError(f"bad range {part!r}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    return tuple(out)


def own_cgroups(root: Path) -> tuple[str | None, str | None, str | None]:
    """(v2 path, v1 cpuset path, v1 cpu path) of this process from /proc/self/cgroup; None where absent."""
    v2 = cpuset = cpu = None
    try:
        text = (root / "proc/self/cgroup").read_text(errors="replace")
    except OSError:
        return None, None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        elif "cpuset" in ctrls.split(","):
            cpuset = path
        elif "cpu" in ctrls.split(","):
            cpu = path
    return v2, cpuset, cpu


def _candidates(mount: Path, path: str | None) -> list[Path]:
    """The cgroup directory named by /proc/self/cgroup under `mount`, then the mount's root. A path that climbs
    (`..`) is not followed."""
    out = []
    if path is not None:
        rel = path.strip().lstrip("/")
        if rel and ".." not in Path(rel).parts:
            out.append(mount / rel)
    out.append(mount)
    return out


def _read_list(dirs: list[Path], name: str) -> tuple[int, ...] | None:
    for d in dirs:
        try:
            ids = parse_cpulist((d / name).read_text())
        except (OSError, ValueError):
            continue
        if ids:
            return ids
    return None


def _status_list(root: Path, key: str) -> tuple[int, ...] | None:
    try:
        for line in (root / "proc/self/status").read_text(errors="replace").splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key:
                return parse_cpulist(v) or None
    except (OSError, ValueError):
        return None
    return None


def _quota(root: Path, v2dirs: list[Path], v1: str | None) -> int | None:
    for d in v2dirs or [root / "sys/fs/cgroup"]:
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            return max(1, int(int(quota) // int(period)))
        except (ValueError, ZeroDivisionError):
            return None
    for d in _candidates(root / "sys/fs/cgroup/cpu", v1):
        try:
            q = int((d / "cpu.cfs_quota_us").read_text())
            p = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if q <= 0 or p <= 0 else max(1, q // p)
    return None


def read_cgroup(root: Path) -> CgroupView:
    """The usable CPUs, memory nodes and CPU quota that this process's cgroup (or its status) gives."""
    v2, cpuset, cpu = own_cgroups(root)
    fs = root / "sys/fs/cgroup"
    v2dirs = _candidates(fs, v2) if v2 is not None else []
    if v2 is not None and (fs / "unified").is_dir():  # hybrid hierarchy: v2 mounted beside the v1 controllers
        v2dirs = _candidates(fs / "unified", v2) + v2dirs
    v1dirs = _candidates(fs / "cpuset", cpuset) if cpuset is not None else []
    view: dict[str, tuple[tuple[int, ...] | None, str]] = {}
    for kind, v2name, v1names, key in (("cpus", "cpuset.cpus.effective", ("cpuset.effective_cpus", "cpuset.cpus"),
                                        "Cpus_allowed_list"),
                                       ("mems", "cpuset.mems.effective", ("cpuset.effective_mems", "cpuset.mems"),
                                        "Mems_allowed_list")):
        ids = _read_list(v2dirs, v2name)
        src = f"cgroup {v2name}"
        if ids is None:
            for name in v1names:
                ids = _read_list(v1dirs, name)
                src = f"cgroup v1 {name}"
                if ids is not None:
                    break
        if ids is None:
            ids = _status_list(root, key)
            src = f"/proc/self/status {key}"
        view[kind] = (ids, src if ids is not None else "")
    return CgroupView(view["cpus"][0], view["cpus"][1], view["mems"][0], view["mems"][1],
                      _quota(root, v2dirs, cpu))
