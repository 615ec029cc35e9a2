"""The install gate on real installs (issue 22, "OK means it will start").

The contract venvs are real sglang-kt 0.7.2 / sglang 0.5.23 installs with torch 2.14.1 (through a .pth), no
flashinfer, no setproctitle and sgl_kernel without its CUDA payload: `doctor --python`, `check` and a launch must
refuse them with the real reasons. The issue's own install is built from the sglang-kt venv: its packages (linked,
not copied) less transformers-kt, plus the plain transformers wheel where pip can get it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.cli import main
from kt_launch.facts.install import WORKER, read_install_facts

PLAIN_TRANSFORMERS = "transformers==5.18.0"


@pytest.fixture(scope="module")
def issue_install(real_venvs, tmp_path_factory) -> str:
    """A venv with sglang-kt 0.7.2's install but plain transformers instead of transformers-kt (issue 22)."""
    src = Path(real_venvs["sglang-kt"]).parent.parent
    root = tmp_path_factory.mktemp("issue-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    src_site = next((src / "lib").glob("python3*/site-packages"))
    for entry in src_site.iterdir():
        if entry.name.startswith(("transformers", "__pycache__")):  # transformers-kt and its payload carrier
            continue
        (site / entry.name).symlink_to(entry)
    # the real plain transformers wheel, where pip can get it (the assertions hold without it too)
    subprocess.run([real_venvs["sglang-kt"], "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--target", str(site), PLAIN_TRANSFORMERS], capture_output=True, timeout=600, check=False)
    return str(py)


@pytest.fixture(scope="module")
def gate_cache(tmp_path_factory) -> Path:
    """A kt-launch cache shared by this module's tests of the issue install (its gate runs once, ~15 s)."""
    return tmp_path_factory.mktemp("gate-cache")


def _profile(tmp_path: Path, python: str) -> Path:
    model = synthetic.hf_model(tmp_path / "model")
    prof = tmp_path / "p.yaml"
    prof.write_text(f"model: {{path: {model}}}\nkt: {{method: BF16}}\nruntime: {{python: {python}}}\n")
    return prof


def _cold_gate_cache(tmp_path: Path, shared_cache: Path) -> Path:
    """A kt-launch cache with no install-gate answer, holding the run's warm parser facts (sglang/): the test
    pays for the gate it is about, not for reading the real parser again."""
    cache = tmp_path / "cache"
    shutil.copytree(shared_cache / "sglang", cache / "sglang")
    assert not (cache / "install").exists()
    return cache


def _findings(out: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for f in json.loads(out)["findings"]:
        found.setdefault(f["code"], []).append(f)
    return found


def _starts(monkeypatch, python: str) -> list[list[str]]:
    """Every process kt-launch starts with `python` from now on (the worker client goes through Popen)."""
    seen: list[list[str]] = []
    real = subprocess.Popen

    def spy(argv, *a, **k):
        if isinstance(argv, (list, tuple)) and argv and os.path.abspath(str(argv[0])) == os.path.abspath(python):
            seen.append([str(x) for x in argv])
        return real(argv, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", spy)
    return seen


def test_doctor_python_on_the_issue_install_names_torch_transformers_kt_and_the_failing_import(
        issue_install, gate_cache, capsys, monkeypatch):
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(gate_cache))
    rc = main(["doctor", "--json", "--python", issue_install])
    found = _findings(capsys.readouterr().out)
    assert rc == 3
    pins = {f["message"].split(", but")[0]: f for f in found["KT-E260"]}
    torch = pins["sglang-kt 0.7.2 requires torch==2.9.1"]
    assert "torch 2.14.1" in torch["message"] and torch["fix"] == f"{issue_install} -m pip install torch==2.9.1"
    tk = pins["sglang-kt 0.7.2 requires transformers-kt==5.6.0.post6"]
    assert tk["fix"] == f"{issue_install} -m pip install transformers-kt==5.6.0.post6"
    imports = {f["message"].split("`")[1]: f["message"] for f in found["KT-E262"]}
    assert "No module named 'common_ops'" in imports["import sgl_kernel"]  # the real exception's last line
    assert "CUDA payload is incomplete" in imports["import sgl_kernel"]
    assert [f["level"] for f in found["KT-I260"]] == ["info"]  # kt-kernel's torch pin: known harmless
    assert not any("kt-launch[" in f["fix"] for fs in found.values() for f in fs)


def test_check_refuses_the_contract_install_and_a_second_check_starts_no_interpreter(
        real_venvs, shared_cache, capsys, tmp_path, monkeypatch):
    python = real_venvs["sglang-kt"]
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(_cold_gate_cache(tmp_path, shared_cache)))
    prof = _profile(tmp_path, python)
    cold = _starts(monkeypatch, python)
    assert main(["check", "--json", "--profile", str(prof)]) == 3
    found = _findings(capsys.readouterr().out)
    assert any("torch==2.9.1" in f["message"] and "torch 2.14.1" in f["message"] for f in found["KT-E260"])
    assert any("flashinfer_python==0.6.3" in f["message"] for f in found["KT-E260"])
    assert any(str(WORKER) in argv for argv in cold)  # the gate ran once in that interpreter

    warm = _starts(monkeypatch, python)
    assert main(["check", "--json", "--profile", str(prof)]) == 3
    assert _findings(capsys.readouterr().out).keys() == found.keys()
    assert warm == []  # an unchanged install: every answer came from the cache

    # a launch is refused by the same verdicts (before exec), from the same cache
    assert main(["--profile", str(prof)]) == 3
    err = capsys.readouterr().err
    assert "KT-E260" in err and "KT-E262" in err and "nothing was launched" in err and warm == []

    # --dry-run reads the same cached answer, and only warns
    assert main(["--dry-run", "--json", "--profile", str(prof)]) == 0
    planned = _findings(capsys.readouterr().out)
    assert "KT-W260" in planned and "KT-E260" not in planned and warm == []


def test_dry_run_never_runs_the_gate_cold(real_venvs, shared_cache, capsys, tmp_path, monkeypatch):
    python = real_venvs["sglang-kt"]
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(_cold_gate_cache(tmp_path, shared_cache)))
    prof = _profile(tmp_path, python)
    started = _starts(monkeypatch, python)
    assert main(["--dry-run", "--json", "--profile", str(prof)]) == 0
    assert "KT-I265" in _findings(capsys.readouterr().out)
    assert not any(str(WORKER) in argv for argv in started)


def test_a_changed_install_is_judged_again(issue_install, gate_cache):
    assert read_install_facts(issue_install, cache_dir=gate_cache / "install").judged  # warm after the doctor test
    assert read_install_facts(issue_install, cache_dir=gate_cache / "install").from_cache
    site = next(Path(issue_install).parent.parent.glob("lib/python3*/site-packages"))
    (site / "setproctitle-1.3.7.dist-info").mkdir()  # what `pip install setproctitle` leaves behind
    try:
        again = read_install_facts(issue_install, cache_dir=gate_cache / "install")
        assert again.judged and not again.from_cache
    finally:
        (site / "setproctitle-1.3.7.dist-info").rmdir()
