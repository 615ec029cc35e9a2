"""`kt-launch doctor`: wires the layers. The facts are read at the edge (facts/host.py, facts/doctor.py,
facts/sglang.py), the verdicts are a pure function of them (resolve/doctor_verdicts.py), and
render/doctor.py writes them.

Exit 0 only when no verdict is an error (unlike `kt doctor`, which always exits 0).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from kt_launch.core.errors import ConfigError
from kt_launch.facts.doctor import gather_doctor_facts
from kt_launch.facts.host import gather_host, load_host_facts
from kt_launch.render.doctor import doctor_json, doctor_text
from kt_launch.resolve.doctor_verdicts import doctor_findings, sglang_capabilities


def run(args, passthrough) -> int:
    """`kt-launch doctor [--json] [--host-facts FILE]`: 0 when no verdict is an error, else 3."""
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
    sglang = install = None
    if local is not None:  # this machine: judge a launch with this interpreter (or --python) as a launch would
        sglang, install = _launch_facts(local, getattr(args, "python", None))
    ruled = None if sglang is not None and sglang.error_kind == "interpreter_missing" else sglang  # KT-E513 says it
    findings = doctor_findings(host, local, launch=local is not None, sglang=ruled, install=install)
    record = _model_record(args.model) if getattr(args, "model", None) else None
    if getattr(args, "python", None):
        findings += sglang_capabilities(sglang)
    sys.stdout.write(doctor_json(host, findings, record) if args.json
                     else doctor_text(host, findings, local is None, record))
    return 3 if any(f.level == "error" for f in findings) else 0


def _launch_facts(local, python: str | None):
    """The SGLang and install facts a launch with `python` (default: this interpreter) would be judged on, gathered
    as app.py gathers them for a plan (facts/sglang.py, facts/install.py; both cached)."""
    from kt_launch.core.sglang import SglangFacts
    from kt_launch.facts.install import read_install_facts
    from kt_launch.facts.sglang import read_sglang_facts

    if python is None:
        python = sys.executable
        if local.sglang_origin == "":  # no process needed to say no
            sglang = SglangFacts.failed(python, "not_installed", f"sglang is not installed in {python}")
        else:
            sglang = read_sglang_facts(python)
        if local.sglang_origin == "" and local.kt_kernel_origin == "":
            return sglang, None
        return sglang, read_install_facts(python)
    sglang = read_sglang_facts(python)
    if sglang.error_kind == "interpreter_missing":  # KT-E513 says it (sglang_capabilities)
        return sglang, None
    return sglang, read_install_facts(python)


def _model_record(path: str) -> dict:
    """`doctor --model DIR`: the model facts --model-facts reads (facts/model_record.py); a bad dir is exit 2."""
    from kt_launch.facts.model import ModelConfigError
    from kt_launch.facts.model_record import record_model

    try:
        return record_model(path)
    except ModelConfigError as e:
        raise ConfigError(f"--model: {e}") from None
