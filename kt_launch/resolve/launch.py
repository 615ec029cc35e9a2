"""Rules for a launch on this machine (exec or --supervise, not --dry-run and not a --host-facts plan).

What only warns a planner is fatal for a server started here: without SGLang in runtime.python, or without a GPU,
the server dies after kt-launch has handed over (`No module named 'sglang'`). So these are errors, before exec.
`launch_refusals` is the one rule: a launch uses it on the plan, and `kt-launch doctor` on this machine, so doctor
never says OK where a launch would be refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from kt_launch.core.findings import Finding, error
from kt_launch.core.host import HostFacts
from kt_launch.core.plan import Resolved
from kt_launch.resolve.inputs import ResolveInput

if TYPE_CHECKING:
    from kt_launch.core.sglang import SglangFacts

# SglangFacts.error_kind values that mean "this interpreter cannot start the server"
_NO_SGLANG = ("not_installed", "import_failed")


def sglang_install_line(python: str, flavor: str = "sglang-kt") -> str:
    """The exact command that installs the SGLang of `flavor` into `python` (real package names and versions)."""
    from kt_launch.core.install import KT_KERNEL, SGLANG_KT, SGLANG_UPSTREAM, pip_line  # only for a fix line

    return pip_line(python, SGLANG_KT) if flavor != "sglang" else pip_line(python, SGLANG_UPSTREAM, KT_KERNEL)


def launch_refusals(python: str, sglang: SglangFacts | None, host: HostFacts, gpu_required: bool = True,
                    flavor: str = "sglang-kt") -> list[Finding]:
    """Why a server started here with `python` would die at start: the interpreter, SGLang, the GPU."""
    out: list[Finding] = []
    if sglang is not None and sglang.error_kind == "interpreter_missing":
        out.append(error("KT-E250", f"runtime.python {python} cannot be run here: {sglang.error}",
                         "set runtime.python to an interpreter that has sglang-kt (or unset it to use this one)"))
    elif sglang is not None and sglang.error_kind in _NO_SGLANG:
        out.append(error("KT-E251", f"no SGLang importable in runtime.python {python}: {sglang.error}; the server "
                         "would die at start", f"{sglang_install_line(python, flavor)}, or set runtime.python to an "
                         "interpreter that has it"))
    if not host.gpus and gpu_required:
        out.append(error("KT-E252", f"no GPU visible on {host.source}: SGLang needs a CUDA GPU for attention and the "
                         "GPU experts", "check nvidia-smi and runtime.cuda_visible_devices / CUDA_VISIBLE_DEVICES; to "
                         "plan for another machine use --dry-run --host-facts FILE"))
    return out


def check_local_launch(inp: ResolveInput, values: dict[str, Resolved]) -> Iterable[Finding]:
    if not inp.launch_here:
        return []
    return launch_refusals(values["runtime.python"].value, inp.sglang, inp.host, inp.gpu_required,
                           values["runtime.flavor"].value)
