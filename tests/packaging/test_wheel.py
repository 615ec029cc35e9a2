"""The installed wheel (not an editable install) carries the bundled profiles: the design's first use,
`kt-launch --profile deepseek-v2-lite-lora.yaml --dry-run`, works from any directory after `pip install`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)


def test_installed_wheel_finds_bundled_profiles(tmp_path):
    wheels = tmp_path / "wheels"
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
              str(REPO)])
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("kt_launch-*.whl")
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    py = venv / "bin" / "python"
    r = _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)])
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KT_LAUNCH_", "PYTHON"))}
    env["HOME"] = str(tmp_path / "home")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    # no test fixtures in the wheel: they live in the checkout's devtools/ (make demo, the tests)
    assert not [n for n in names if "synthetic" in n or n.startswith(("devtools/", "tests/"))], names
    for f in (REPO / "configs").glob("*.yaml"):  # the single copy in configs/, mapped into the package
        assert f"kt_launch/profiles/{f.name}" in names
    for ref in ("deepseek-v2-lite-lora", "deepseek-v2-lite-lora.yaml", "demo.yaml"):
        r = _run([str(venv / "bin" / "kt-launch"), "--profile", ref, "--dry-run", "--no-check"], cwd=work, env=env)
        assert r.returncode == 0, ref + r.stdout + r.stderr
        assert r.stdout.startswith("OK") and "--kt-num-gpu-experts 0" in r.stdout and "Traceback" not in r.stderr
    r = _run([str(venv / "bin" / "kt-launch"), "profiles"], cwd=work, env=env)
    assert r.returncode == 0 and "deepseek-v2-lite-lora" in r.stdout and "bundled" in r.stdout
    assert str(REPO) not in r.stdout  # the installed copy, not this checkout
    r = _run([str(venv / "bin" / "kt-launch"), "--profile", "demo", "--dry-run"], cwd=work, env=env)
    assert r.returncode == 3 and "devtools/synthetic.py demo/" in r.stdout and "make demo" in r.stdout, \
        r.stdout + r.stderr  # KT-I150
