"""`kt-launch doctor --python PY` reports the installed SGLang's flavour, versions and capabilities,
from the real packages, and refuses upstream sglang beside a kt-kernel that needs gpu_experts_mask."""

from __future__ import annotations

import json

from kt_launch.cli import main


def _doctor(capsys, python, cache, monkeypatch):
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(cache))
    rc = main(["doctor", "--json", "--python", python])
    doc = json.loads(capsys.readouterr().out)
    return rc, {f["code"]: f for f in doc["findings"]}


def test_doctor_reports_sglang_kt(capsys, real_venvs, shared_cache, monkeypatch):
    rc, found = _doctor(capsys, real_venvs["sglang-kt"], shared_cache, monkeypatch)
    msg = found["KT-I511"]["message"]
    assert "sglang-kt 0.7.2" in msg and "flavour sglang-kt" in msg and "kt-kernel 0.7.2" in msg
    assert "NUMA binding" in msg.split("lacks:")[0] and "expert LoRA" in msg.split("lacks:")[0]
    assert "KT-E317" not in found


def test_doctor_refuses_upstream_with_mask_kt_kernel(capsys, real_venvs, shared_cache, monkeypatch):
    rc, found = _doctor(capsys, real_venvs["sglang"], shared_cache, monkeypatch)
    assert "flavour sglang;" in found["KT-I511"]["message"]
    assert "gpu_experts_mask" in found["KT-E317"]["message"] and rc == 3


def test_doctor_with_an_interpreter_without_sglang(capsys, tmp_path, monkeypatch):
    import sys

    rc, found = _doctor(capsys, sys.executable, tmp_path, monkeypatch)
    assert "KT-W511" in found and "KT-I511" not in found
