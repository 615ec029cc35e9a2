"""Rules for a launch on this machine (exec or --supervise, not --dry-run and not a --host-facts plan).

What only warns a planner is fatal for a server started here: without SGLang in runtime.python, or without a GPU,
the server dies after kt-launch has handed over (`No module named 'sglang'`). So these are errors, before exec.
"""

from __future__ import annotations

from typing import Iterable

from kt_launch.core.findings import Finding, error
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput

# SglangFacts.error_kind values that mean "this interpreter cannot start the server"
_NO_SGLANG = ("not_installed", "import_failed")


def check_local_launch(inp: ResolveInput, values: dict[str, Resolved]) -> Iterable[Finding]:
    if not inp.launch_here:
        return
    python = values["runtime.python"].value
    facts = inp.sglang
    if facts is not None and facts.error_kind == "interpreter_missing":
        yield error("KT-E250", f"runtime.python {python} cannot be run here: {facts.error}",
                    "set runtime.python to an interpreter that has sglang-kt (or unset it to use this one)")
    elif facts is not None and facts.error_kind in _NO_SGLANG:
        yield error("KT-E251", f"no SGLang importable in runtime.python {python}: {facts.error}; the server would "
                    "die at start", "pip install sglang-kt into that interpreter (pip install 'kt-launch[sglang]'), "
                    "or set runtime.python to one that has it")
    if not inp.host.gpus and inp.gpu_required:
        yield error("KT-E252", f"no GPU visible on {inp.host.source}: SGLang needs a CUDA GPU for attention and the GPU "
                    "experts", "check nvidia-smi and runtime.cuda_visible_devices / CUDA_VISIBLE_DEVICES; to plan for "
                    "another machine use --dry-run --host-facts FILE")
