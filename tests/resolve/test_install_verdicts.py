"""The install gate's verdicts (resolve/install.py) and the one launch rule doctor shares (resolve/launch.py), on
literal facts: severity per requirement, plan-only warnings, fix lines that name real packages and versions."""

from __future__ import annotations

import tomllib
from pathlib import Path

from kt_launch.core.host import CpuFacts, GpuFacts, HostFacts, NumaNode
from kt_launch.core.install import KT_KERNEL, SGLANG_KT, SGLANG_ROUTER, ImportResult, InstallFacts, Unmet, pin
from kt_launch.core.local import LocalFacts
from kt_launch.core.sglang import SglangFacts
from kt_launch.resolve.doctor_verdicts import doctor_findings
from kt_launch.resolve.fleet import router_missing
from kt_launch.resolve.install import install_findings
from kt_launch.resolve.launch import launch_refusals
from kt_launch.resolve.verdicts import no_kt_flags

REPO = Path(__file__).resolve().parents[2]
PY = "/opt/sgl/bin/python"
ISSUE_INSTALL = InstallFacts(
    PY, dists=(("sglang-kt", "0.7.2"), ("kt-kernel", "0.7.2"), ("torch", "2.14.1"), ("transformers", "5.25.0")),
    unmet=(Unmet("sglang-kt", "0.7.2", "torch", "==2.9.1", "2.14.1"),
           Unmet("sglang-kt", "0.7.2", "transformers-kt", "==5.6.0.post6", None),
           Unmet("sglang-kt", "0.7.2", "setproctitle", "", None),
           Unmet("sglang-kt", "0.7.2", "loguru", "<1,>=0.7", None),
           Unmet("kt-kernel", "0.7.2", "torch", "==2.9.1", "2.14.1")),
    imports=(ImportResult("sglang.launch_server", True),
             ImportResult("sgl_kernel", False, "ImportError", "- ModuleNotFoundError: No module named 'common_ops'",
                          "/x/sgl_kernel/load_utils.py:208")),
    payload_missing=("accelerate_kt_sgl_kernel_payload",))


def by_code(findings):
    out: dict[str, list] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


def test_a_broken_install_is_errors_with_exact_pip_lines_and_the_harmless_pin_is_an_info():
    f = by_code(install_findings(ISSUE_INSTALL, blocks=True))
    errors = {x.message.split(",")[0]: x for x in f["KT-E260"]}
    torch = errors["sglang-kt 0.7.2 requires torch==2.9.1"]
    assert "torch 2.14.1" in torch.message and torch.fix == f"{PY} -m pip install torch==2.9.1"
    tk = errors["sglang-kt 0.7.2 requires transformers-kt==5.6.0.post6"]
    assert "no transformers-kt" in tk.message and tk.fix.endswith("pip install transformers-kt==5.6.0.post6")
    assert [x.level for x in f["KT-I260"]] == ["info"] and "does not link libtorch" in f["KT-I260"][0].message
    (other,) = f["KT-W261"]  # the rest of sglang-kt's requirements: one warning, with the exact line
    assert "setproctitle (not installed)" in other.message and other.fix.endswith("setproctitle 'loguru<1,>=0.7'")
    (imp,) = f["KT-E262"]
    assert "import sgl_kernel" in imp.message and "No module named 'common_ops'" in imp.message
    assert "accelerate_kt_sgl_kernel_payload" in imp.message
    assert not any("kt-launch[" in x.fix for x in install_findings(ISSUE_INSTALL))


def test_a_plan_that_only_warns_gets_the_warning_twins():
    f = install_findings(ISSUE_INSTALL, blocks=False)
    assert not [x for x in f if x.level == "error"]
    assert {"KT-W260", "KT-W262"} <= {x.code for x in f}


def test_not_judged_and_failed_are_told_apart_and_none_is_silent():
    assert install_findings(None) == []
    (cold,) = install_findings(InstallFacts.not_judged(PY, "--dry-run reads only a cached answer"))
    assert cold.code == "KT-I265" and "kt-launch check" in cold.fix
    (dead,) = install_findings(InstallFacts.not_judged(PY, "did not finish within 300 s", failed=True))
    assert dead.code == "KT-W264" and "300 s" in dead.message


def test_the_same_failure_twice_in_the_import_chain_is_said_once():
    same = "ModuleNotFoundError: No module named 'uvicorn'"
    facts = InstallFacts(PY, imports=(ImportResult("sglang.launch_server", False, "ModuleNotFoundError", same),
                                      ImportResult("sglang.srt.entrypoints.http_server", False,
                                                   "ModuleNotFoundError", same)))
    assert len(install_findings(facts)) == 1


def test_fix_lines_name_the_real_packages_never_kt_launch_extras():
    missing = SglangFacts.failed(PY, "not_installed", f"sglang is not installed in {PY}")
    (e251,) = [f for f in launch_refusals(PY, missing, _host(gpus=1)) if f.code == "KT-E251"]
    assert e251.fix.startswith(f"{PY} -m pip install sglang-kt==0.7.2") and "kt-launch[" not in e251.fix
    (up,) = launch_refusals(PY, missing, _host(gpus=1), flavor="sglang")
    assert "sglang==0.5.23 kt-kernel==0.7.2" in up.fix
    w710 = router_missing(PY)
    assert w710.fix.startswith(f"{PY} -m pip install sglang-router==0.3.2") and "kt-launch[" not in w710.fix


def test_the_stack_versions_agree_with_pyproject_extras():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["sglang"] == [pin(SGLANG_KT)] and extras["router"] == [pin(SGLANG_ROUTER)]
    assert pin(KT_KERNEL) in extras["backend"]


def test_doctor_on_this_machine_uses_the_launch_rule():
    """No GPU, no SGLang: doctor gives the very findings a launch refuses with, not a warning."""
    host = _host(gpus=0)
    local = LocalFacts(python=PY, sglang_origin="", kt_kernel_origin="", numa_balancing="0")
    missing = SglangFacts.failed(PY, "not_installed", f"sglang is not installed in {PY}")
    f = doctor_findings(host, local, launch=True, sglang=missing, install=ISSUE_INSTALL)
    refusals = launch_refusals(PY, missing, host)
    assert {x.code for x in refusals} == {"KT-E251", "KT-E252"} and set(refusals) <= set(f)
    assert not {"KT-W509", "KT-W504"} & {x.code for x in f}  # the errors say it
    assert "KT-E260" in {x.code for x in f}
    recorded = doctor_findings(host, None)  # a recorded host is judged, not launched on
    assert "KT-W509" in {x.code for x in recorded} and "KT-E252" not in {x.code for x in recorded}


def _host(gpus: int) -> HostFacts:
    return HostFacts(cpu=CpuFacts(model="x", physical_cores=8, logical_cpus=16, usable_cpus=tuple(range(16)),
                                  flags=frozenset({"avx2", "avx512f"})),
                     numa=(NumaNode(0, tuple(range(16)), 64 << 30),), memory_total_bytes=64 << 30,
                     memory_available_bytes=60 << 30,
                     gpus=tuple(GpuFacts(i, "L20", 48 << 30) for i in range(gpus)), source="this machine")


def test_no_fix_line_advises_kt_launch_extras_for_another_interpreter():
    """Issue 23: kt-launch is not on the package index; every fix line names the real package and version."""
    advising = [str(p.relative_to(REPO)) for p in (REPO / "kt_launch").rglob("*.py") if "kt-launch[" in p.read_text()]
    assert advising == []
    e307 = no_kt_flags(SglangFacts.failed(PY, "x", "y"))
    assert e307.fix.startswith(f"{PY} -m pip install sglang-kt==0.7.2")
    local = LocalFacts(python=PY, sglang_origin="", kt_kernel_origin="", numa_balancing="0")
    fixes = {f.code: f.fix for f in doctor_findings(_host(gpus=1), local)}
    assert fixes["KT-W505"].endswith(f"{PY} -m pip install kt-kernel==0.7.2") and "sglang-kt==0.7.2" in fixes["KT-W504"]
