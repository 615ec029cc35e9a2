"""Resolver steps as objects: each declares the plan values it fills and what it reads (other steps' values, or
facts), next to its code, with `@step(fills=..., reads=...)`. The run order is computed from those declarations
(a topological sort; the registry order of what they fill breaks ties), and the graph is checked when the pipeline is
imported: a derived Option no step fills, a key two steps fill, a fill that is not a registry key, a read nobody
fills, or a cycle is an error at import, not a silently skipped value at launch. `kt-launch schema --steps`
prints the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from kt_launch.core.options import DERIVED, Option

# What a step may read besides other steps' values: the facts ResolveInput carries.
FACTS = frozenset({"config", "host", "model", "adapters", "artifacts", "sglang", "tuning", "weights", "checks",
                   "stats"})
# Values filled before any step runs: the flavour (resolve_flavor), which every flavour-dependent step reads.
ROOTS = frozenset({"runtime.flavor"})
# Computed facts a step fills for other steps and the pipeline, which are no profile key and no plan value: the
# pipeline takes them out of the values after the steps (`take_step_values`), so nothing renders them. Their
# Resolved.value is the object itself.
STEP_VALUES = {
    "memory.setup": "the memory arithmetic's set-up (resolve/memory.py Setup), made once per resolve",
    "placement.plan": "the GPU experts per MoE layer under the resolved placement (core/placement.py PlacementPlan)",
}

StepFn = Callable[..., None]  # (inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None


@dataclass(frozen=True)
class Step:
    name: str
    fills: tuple[str, ...]
    reads: tuple[str, ...]
    run: StepFn
    doc: str

    def __call__(self, inp, values, out) -> None:
        self.run(inp, values, out)


_DECLARED: list[Step] = []


def step(*, fills: Iterable[str], reads: Iterable[str] = ()) -> Callable[[StepFn], StepFn]:
    """Declare a resolver function as a step: the values it fills and what it reads."""
    def register(fn: StepFn) -> StepFn:
        doc = " ".join((fn.__doc__ or "").strip().split("\n\n", 1)[0].split())  # the first paragraph
        _DECLARED.append(Step(fn.__name__.removeprefix("resolve_"), tuple(fills), tuple(reads), fn, doc))
        return fn
    return register


def take_step_values(values: dict) -> dict:
    """Remove the STEP_VALUES from a resolve's values and return them (key -> the object)."""
    return {k: values.pop(k).value for k in STEP_VALUES if k in values}


def declared() -> tuple[Step, ...]:
    return tuple(_DECLARED)


class StepGraphError(ValueError):
    """The step declarations disagree with the option registry or with each other (a programming error)."""


def ordered(steps: Iterable[Step], options: Iterable[Option]) -> tuple[Step, ...]:
    """The steps in an order where each runs after every step it reads from; checked against the registry.
    Ties go by the registry position of the first key a step fills, so the plan lists values in profile order."""
    options = tuple(options)
    position = {o.key: i for i, o in enumerate(options)}
    steps = tuple(sorted(steps, key=lambda s: min(position.get(k, len(position)) for k in s.fills)))
    keys = set(position)
    filler: dict[str, Step] = {}
    for s in steps:
        for key in s.fills:
            if key not in keys and key not in STEP_VALUES:
                raise StepGraphError(f"step {s.name} fills {key!r}, which is neither an Option nor a step value")
            if key in filler or key in ROOTS:
                raise StepGraphError(f"{key!r} is filled by step {s.name} and by {filler[key].name if key in filler else 'resolve_flavor'}")
            filler[key] = s
    for o in options:
        if o.resolve == DERIVED and o.key not in filler:
            raise StepGraphError(f"Option {o.key} is derived, but no step fills it")
    for s in steps:
        for r in s.reads:
            if r not in FACTS and r not in ROOTS and r not in filler:
                raise StepGraphError(f"step {s.name} reads {r!r}, which is no fact and no step's value")
    after = {s.name: {filler[r].name for r in s.reads if r in filler and filler[r] is not s} for s in steps}
    done: list[Step] = []
    left = list(steps)
    while left:
        ready = next((s for s in left if after[s.name] <= {d.name for d in done}), None)
        if ready is None:
            raise StepGraphError("the steps read each other in a cycle: " + ", ".join(s.name for s in left))
        done.append(ready)
        left.remove(ready)
    return tuple(done)
