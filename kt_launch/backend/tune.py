"""Thread autotune for kt-kernel: sweep, select, cache.

- `sweep_points(host, ...)` lists the (cpuinfer, threadpool_count, numa_nodes) points to measure.
- `tune(base_spec, python, points, ...)` measures each point in its own process (kt-kernel's
  CPUInfer is a process-wide singleton: a second wrapper silently reuses the first pool), decode
  (qlen 1) and prefill (qlen = chunk size), medians of repeats, and returns a `Sweep`.
- `select_best(sweep)` is pure: it picks the point whose worse-of-(decode, prefill) ratio to the
  best of the sweep is highest, preferring fewer threads within a small margin.
- `save_tuned` stores the choice in the per-host cache, keyed by host fingerprint, model shape key
  and method. Reading that cache (what a plan uses with source `tuned`) is a fact about the host and
  lives in `kt_launch.facts.tuning`, with the file's location and format.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from kt_launch.backend.probe import ProbeResult, ProbeSpec, run_probe
from kt_launch.facts.tuning import cache_key, host_fingerprint, store_entry

# Within this fraction of the best score, fewer threads win (they leave cores to SGLang and the OS).
DEFAULT_MARGIN = 0.02

# ------------------------------------------------------------------------------------------
# Points
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TunePoint:
    cpuinfer: int
    threadpool_count: int = 1
    numa_nodes: tuple[int, ...] | None = None

    def label(self) -> str:
        s = f"{self.cpuinfer}t/{self.threadpool_count}p"
        if self.numa_nodes is not None:
            s += f" nodes={list(self.numa_nodes)}"
        return s


def thread_grid(max_threads: int, dense_upto: int = 16, tail: int = 6) -> list[int]:
    """1..max when small; for big hosts a coarse grid plus every value in the top `tail`."""
    if max_threads <= dense_upto:
        return list(range(1, max_threads + 1))
    vals = {1, 2, 4}
    step = max(2, max_threads // 12)
    vals.update(range(8, max_threads + 1, step))
    vals.update(range(max(1, max_threads - tail), max_threads + 1))
    return sorted(v for v in vals if 1 <= v <= max_threads)


def sweep_points(host: Any, max_threads: int | None = None, threads: Iterable[int] | None = None) -> list[TunePoint]:
    """Points to measure on `host` (HostFacts). Several NUMA nodes: also one pool per node, bound."""
    cores = host.usable_physical_cores
    limit = max_threads or cores
    grid = sorted(set(threads)) if threads is not None else thread_grid(limit)
    nodes = [n.id for n in host.cpu_numa_nodes]
    pts = [TunePoint(t, 1, None) for t in grid]
    if len(nodes) > 1:
        pools = len(nodes)
        per_pool = [t for t in grid if t >= pools]
        # round to multiples of the pool count so pools are even
        even = sorted({max(pools, (t // pools) * pools) for t in per_pool})
        pts += [TunePoint(t, pools, tuple(nodes)) for t in even]
    return pts


# ------------------------------------------------------------------------------------------
# Sweep data
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepPoint:
    cpuinfer: int
    threadpool_count: int
    numa_nodes: tuple[int, ...] | None
    ok: bool
    decode_tokens_per_s: float | None = None
    prefill_tokens_per_s: float | None = None
    decode_median_s: float | None = None
    prefill_median_s: float | None = None
    decode_times_s: tuple[float, ...] = ()
    prefill_times_s: tuple[float, ...] = ()
    error: str | None = None

    @property
    def point(self) -> TunePoint:
        return TunePoint(self.cpuinfer, self.threadpool_count, self.numa_nodes)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["numa_nodes"] = list(self.numa_nodes) if self.numa_nodes is not None else None
        d["decode_times_s"] = list(self.decode_times_s)
        d["prefill_times_s"] = list(self.prefill_times_s)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SweepPoint":
        nn = d.get("numa_nodes")
        return cls(cpuinfer=int(d["cpuinfer"]), threadpool_count=int(d.get("threadpool_count", 1)),
                   numa_nodes=tuple(nn) if nn is not None else None, ok=bool(d.get("ok")),
                   decode_tokens_per_s=d.get("decode_tokens_per_s"), prefill_tokens_per_s=d.get("prefill_tokens_per_s"),
                   decode_median_s=d.get("decode_median_s"), prefill_median_s=d.get("prefill_median_s"),
                   decode_times_s=tuple(d.get("decode_times_s") or ()),
                   prefill_times_s=tuple(d.get("prefill_times_s") or ()), error=d.get("error"))

    @classmethod
    def from_result(cls, r: ProbeResult) -> "SweepPoint":
        j = r.to_json()
        return cls(cpuinfer=r.cpuinfer, threadpool_count=r.threadpool_count, numa_nodes=r.numa_nodes, ok=r.ok,
                   decode_tokens_per_s=r.decode_tokens_per_s, prefill_tokens_per_s=r.prefill_tokens_per_s,
                   decode_median_s=r.decode_median_s, prefill_median_s=r.prefill_median_s,
                   decode_times_s=tuple(j.get("decode_times_s") or ()),
                   prefill_times_s=tuple(j.get("prefill_times_s") or ()),
                   error=None if r.ok else f"{r.error_kind}: {r.error}")


@dataclass(frozen=True)
class Sweep:
    method: str
    shape: Mapping[str, int]  # hidden_size, moe_intermediate_size, num_experts, top_k
    prefill_qlen: int
    points: tuple[SweepPoint, ...]
    host_fingerprint: str | None = None
    cpu_model: str | None = None
    cpu_variant: str | None = None
    kt_kernel_version: str | None = None
    shape_key: str | None = None
    measured_at: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "shape": dict(self.shape), "shape_key": self.shape_key,
                "prefill_qlen": self.prefill_qlen, "host_fingerprint": self.host_fingerprint,
                "cpu_model": self.cpu_model, "cpu_variant": self.cpu_variant,
                "kt_kernel_version": self.kt_kernel_version, "measured_at": self.measured_at,
                "meta": dict(self.meta), "points": [p.to_json() for p in self.points]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Sweep":
        return cls(method=d["method"], shape=dict(d.get("shape") or {}), prefill_qlen=int(d.get("prefill_qlen") or 0),
                   points=tuple(SweepPoint.from_json(p) for p in d["points"]),
                   host_fingerprint=d.get("host_fingerprint"), cpu_model=d.get("cpu_model"),
                   cpu_variant=d.get("cpu_variant"), kt_kernel_version=d.get("kt_kernel_version"),
                   shape_key=d.get("shape_key"), measured_at=d.get("measured_at"), meta=dict(d.get("meta") or {}))


def merge_sweeps(rounds: Sequence[Sweep]) -> Sweep:
    """Combine repeated sweeps of the same method and shape (e.g. ascending and descending order, to
    cancel drift): per point, the median across rounds of each round's median tokens/s. A point is ok
    only if it ran in every round that measured it."""
    if not rounds:
        raise ValueError("merge_sweeps needs at least one sweep")
    methods = {r.method for r in rounds}
    if len(methods) != 1:
        raise ValueError(f"cannot merge sweeps of different methods: {sorted(methods)}")
    by_pt: dict[TunePoint, list[SweepPoint]] = {}
    for r in rounds:
        for p in r.points:
            by_pt.setdefault(p.point, []).append(p)

    def med(vals: list[float]) -> float | None:
        v = sorted(x for x in vals if x is not None)
        if not v:
            return None
        n = len(v)
        return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])

    pts = []
    for pt in sorted(by_pt, key=lambda t: (t.threadpool_count, t.cpuinfer)):
        ps = by_pt[pt]
        ok = all(p.ok for p in ps)
        dt = med([p.decode_tokens_per_s for p in ps]) if ok else None
        pt_ = med([p.prefill_tokens_per_s for p in ps]) if ok else None
        pts.append(SweepPoint(pt.cpuinfer, pt.threadpool_count, pt.numa_nodes, ok,
                              decode_tokens_per_s=dt, prefill_tokens_per_s=pt_,
                              decode_median_s=(1.0 / dt) if dt else None,
                              prefill_median_s=(rounds[0].prefill_qlen / pt_) if pt_ else None,
                              error=None if ok else next((p.error for p in ps if not p.ok), None)))
    first = rounds[0]
    return Sweep(method=first.method, shape=first.shape, prefill_qlen=first.prefill_qlen, points=tuple(pts),
                 host_fingerprint=first.host_fingerprint, cpu_model=first.cpu_model, cpu_variant=first.cpu_variant,
                 kt_kernel_version=first.kt_kernel_version, shape_key=first.shape_key,
                 measured_at=max((r.measured_at or "") for r in rounds) or None,
                 meta={"rounds": len(rounds), "merged": "median across rounds of per-round median tokens/s"})


ProgressFn = Callable[[int, int, TunePoint, "ProbeResult | None"], None]


def tune(base: ProbeSpec, python: str, points: Sequence[TunePoint], timeout_s: float = 300.0,
         progress: ProgressFn | None = None, host: Any = None, shape_key: str | None = None,
         check_first: bool = True, env: Mapping[str, str] | None = None) -> Sweep:
    """Measure every point in its own worker process; returns the raw sweep (select with `select_best`).

    progress(i, n, point, result) is called before each point (result None) and after it.
    The first point also checks accuracy (check_first) so a sweep of a broken method stops early.
    """
    results: list[SweepPoint] = []
    variant = version = None
    n = len(points)
    for i, pt in enumerate(points):
        if progress:
            progress(i, n, pt, None)
        spec = base.with_threads(pt.cpuinfer, pt.threadpool_count, pt.numa_nodes)
        if i > 0 or not check_first:
            spec = _replace(spec, check=False)
        r = run_probe(spec, python, timeout_s, env=env)
        variant = variant or r.cpu_variant
        version = version or r.kt_kernel_version
        results.append(SweepPoint.from_result(r))
        if progress:
            progress(i, n, pt, r)
        if i == 0 and not r.ok and r.error_kind not in ("timeout", "crashed"):
            break  # the method does not run at all: every other point would fail the same way
    return Sweep(method=base.method,
                 shape={"hidden_size": base.hidden_size, "moe_intermediate_size": base.moe_intermediate_size,
                        "num_experts": base.num_experts, "top_k": base.top_k},
                 prefill_qlen=base.prefill_qlen if base.prefill_qlen is not None else base.chunked_prefill_size,
                 points=tuple(results), host_fingerprint=host_fingerprint(host) if host is not None else None,
                 cpu_model=host.cpu.model if host is not None else None, cpu_variant=variant,
                 kt_kernel_version=version, shape_key=shape_key, measured_at=_now())


def tune_rounds(base: ProbeSpec, python: str, points: Sequence[TunePoint], rounds: int = 2,
                timeout_s: float = 300.0, progress: ProgressFn | None = None, host: Any = None,
                shape_key: str | None = None, env: Mapping[str, str] | None = None) -> tuple[Sweep, list[Sweep]]:
    """`rounds` sweeps, alternating ascending and descending order (cancels drift and order effects);
    returns (merged, per-round sweeps). The reference check runs on the first point of round 1 only."""
    done: list[Sweep] = []
    for r in range(max(1, rounds)):
        order = list(points) if r % 2 == 0 else list(points)[::-1]
        sw = tune(base, python, order, timeout_s, progress, host, shape_key, check_first=(r == 0), env=env)
        done.append(sw)
        if not any(p.ok for p in sw.points):
            break
    return (merge_sweeps(done) if len(done) > 1 else done[0]), done


def _replace(spec: ProbeSpec, **kw: Any) -> ProbeSpec:
    from dataclasses import replace
    return replace(spec, **kw)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------------
# Selection (pure)
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TuneChoice:
    cpuinfer: int
    threadpool_count: int
    numa_nodes: tuple[int, ...] | None
    decode_ratio: float  # of the best decode point in the sweep
    prefill_ratio: float | None  # of the best prefill point; None when the sweep has no prefill
    decode_tokens_per_s: float
    prefill_tokens_per_s: float | None
    reason: str

    def detail(self, when: str | None = None) -> str:
        s = f"tuned{' ' + when if when else ''}: {self.cpuinfer} threads"
        if self.threadpool_count > 1:
            s += f" in {self.threadpool_count} pools"
        s += f", {self.decode_ratio:.2f} of best decode"
        if self.prefill_ratio is not None:
            s += f" / {self.prefill_ratio:.2f} prefill"
        return s

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["numa_nodes"] = list(self.numa_nodes) if self.numa_nodes is not None else None
        return d


def ratios(sweep: Sweep) -> dict[TunePoint, tuple[float, float | None]]:
    """Each ok point's (decode, prefill) throughput as a ratio of the sweep's best."""
    ok = [p for p in sweep.points if p.ok and p.decode_tokens_per_s]
    if not ok:
        return {}
    best_d = max(p.decode_tokens_per_s for p in ok)
    pre = [p.prefill_tokens_per_s for p in ok if p.prefill_tokens_per_s]
    best_p = max(pre) if pre else None
    out = {}
    for p in ok:
        pr = (p.prefill_tokens_per_s / best_p) if (best_p and p.prefill_tokens_per_s) else None
        out[p.point] = (p.decode_tokens_per_s / best_d, pr)
    return out


def ratio_at(sweep: Sweep, cpuinfer: int, threadpool_count: int = 1) -> tuple[float, float | None] | None:
    """Ratios of the point with these threads (first layout match), None if it was not measured."""
    for pt, r in ratios(sweep).items():
        if pt.cpuinfer == cpuinfer and pt.threadpool_count == threadpool_count:
            return r
    return None


def select_best(sweep: Sweep, margin: float = DEFAULT_MARGIN, prefill_weight: float = 1.0) -> TuneChoice | None:
    """Pick the thread layout: maximise the worse of (decode ratio, prefill ratio); among points within
    `margin` of that score take the fewest threads (then the fewest pools). None if nothing ran.

    prefill_weight < 1 discounts prefill (score = min(decode, 1 - w + w*prefill)); 0 = decode only.
    """
    rs = ratios(sweep)
    if not rs:
        return None

    def score(r: tuple[float, float | None]) -> float:
        d, p = r
        if p is None or prefill_weight <= 0:
            return d
        return min(d, 1.0 - prefill_weight + prefill_weight * p)

    best = max(score(r) for r in rs.values())
    near = [pt for pt, r in rs.items() if score(r) >= best - margin]
    pick = min(near, key=lambda pt: (pt.cpuinfer, pt.threadpool_count))
    d, p = rs[pick]
    sp = next(x for x in sweep.points if x.point == pick)
    best_pt = max(rs, key=lambda pt: (score(rs[pt]), -pt.cpuinfer))
    reason = (f"{pick.label()} scores {score(rs[pick]):.3f} (worse of decode/prefill ratio to the best); "
              f"best {best_pt.label()} scores {score(rs[best_pt]):.3f}; fewest threads within {margin:.0%}")
    return TuneChoice(pick.cpuinfer, pick.threadpool_count, pick.numa_nodes, d, p,
                      sp.decode_tokens_per_s or 0.0, sp.prefill_tokens_per_s, reason)


# ------------------------------------------------------------------------------------------
# Storing a choice (the cache itself: kt_launch.facts.tuning)
# ------------------------------------------------------------------------------------------

def save_tuned(host: Any, shape_key: str, method: str, choice: TuneChoice, sweep: Sweep | None = None,
               path: Path | None = None) -> Path | None:
    """Store the choice for (host, shape, method), keeping other entries; atomic. Returns the cache
    file, or None when it cannot be written (the choice is still printed; nothing else breaks)."""
    entry = {
        "cpuinfer": choice.cpuinfer, "threadpool_count": choice.threadpool_count,
        "numa_nodes": list(choice.numa_nodes) if choice.numa_nodes is not None else None,
        "decode_ratio": round(choice.decode_ratio, 4),
        "prefill_ratio": round(choice.prefill_ratio, 4) if choice.prefill_ratio is not None else None,
        "decode_tokens_per_s": choice.decode_tokens_per_s, "prefill_tokens_per_s": choice.prefill_tokens_per_s,
        "measured_at": (sweep.measured_at if sweep and sweep.measured_at else _now()),
        "cpu_model": host.cpu.model, "shape_key": shape_key, "method": method,
        "cpu_variant": sweep.cpu_variant if sweep else None,
        "kt_kernel_version": sweep.kt_kernel_version if sweep else None,
        "points": len(sweep.points) if sweep else None, "reason": choice.reason,
    }
    return store_entry(cache_key(host_fingerprint(host), shape_key, method), entry, path)


# ------------------------------------------------------------------------------------------
# One call for the CLI: sweep, select, store
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TuneOutcome:
    choice: TuneChoice | None  # None: no point ran (see sweep.points[*].error)
    sweep: Sweep  # merged over rounds
    rounds: tuple[Sweep, ...]
    cache_file: Path | None  # where the choice was stored; None when not stored (or not writable)

    def to_json(self) -> dict[str, Any]:
        return {"choice": self.choice.to_json() if self.choice else None, "sweep": self.sweep.to_json(),
                "rounds": [r.to_json() for r in self.rounds],
                "cache_file": str(self.cache_file) if self.cache_file else None}


def format_progress(i: int, n: int, pt: TunePoint, r: ProbeResult | None) -> str:
    """One line per finished point, for `kt-launch tune` progress output ('' before a point starts)."""
    if r is None:
        return ""
    if not r.ok:
        return f"[{i + 1}/{n}] {pt.label()}: failed ({r.error_kind}: {r.error})"
    s = f"[{i + 1}/{n}] {pt.label()}: decode {r.decode_median_s * 1e3:.2f} ms"
    if r.prefill_median_s is not None:
        s += f", prefill {r.prefill_qlen} tok {r.prefill_median_s * 1e3:.1f} ms"
    return s


def run_tune(base: ProbeSpec, python: str, host: Any, shape_key: str, *, rounds: int = 2,
             threads: Iterable[int] | None = None, max_threads: int | None = None, timeout_s: float = 300.0,
             progress: ProgressFn | None = None, store: bool = True, cache_file: Path | None = None,
             env: Mapping[str, str] | None = None) -> TuneOutcome:
    """Sweep the host's thread layouts for `base` (method, shape, chunk, LoRA), select, and store the
    choice in the per-host cache (keyed by host fingerprint, shape_key, base.method)."""
    points = sweep_points(host, max_threads=max_threads, threads=threads)
    merged, done = tune_rounds(base, python, points, rounds=rounds, timeout_s=timeout_s, progress=progress,
                               host=host, shape_key=shape_key, env=env)
    choice = select_best(merged)
    path = None
    if store and choice is not None:
        path = save_tuned(host, shape_key, base.method, choice, merged, path=cache_file)
    return TuneOutcome(choice, merged, tuple(done), path)
