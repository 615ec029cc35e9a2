"""The install gate on an install that is right for what it runs here: the backend test venv (the real kt-kernel
0.7.2 with a CPU torch, no SGLang). kt-kernel's torch==2.9.1 pin is unmet there, and harmless (its extension does
not link libtorch), so `check` of a profile that uses it passes; `import kt_kernel` really runs in it."""

from __future__ import annotations

import json

from devtools import synthetic
from kt_launch.cli import main
from kt_launch.facts.install import read_install_facts


def test_check_passes_an_install_whose_requirements_hold_but_a_harmless_pin(backend_python, capsys, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    model = synthetic.hf_model(tmp_path / "model")
    prof = tmp_path / "p.yaml"
    prof.write_text(f"model: {{path: {model}}}\nkt: {{method: BF16}}\nruntime: {{python: {backend_python}}}\n")
    rc = main(["check", "--json", "--profile", str(prof)])
    doc = json.loads(capsys.readouterr().out)
    codes = {f["code"]: f for f in doc["findings"]}
    assert rc == 0, [f for f in doc["findings"] if f["level"] == "error"]
    assert "torch==2.9.1" in codes["KT-I260"]["message"] and codes["KT-I260"]["level"] == "info"
    assert not {"KT-E260", "KT-E262", "KT-W260", "KT-W262", "KT-W264"} & set(codes)
    facts = read_install_facts(backend_python, cache_dir=tmp_path / "cache" / "install")
    assert facts.from_cache and [(i.module, i.ok) for i in facts.imports] == [("kt_kernel", True)]
    assert dict(facts.dists)["kt-kernel"] == "0.7.2"
