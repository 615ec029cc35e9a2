"""Issue 22: the demo tree `make demo` writes is one kt-kernel can build. After `kt-launch init demo/model`,
`probe` runs with the backend venv's interpreter, and `convert` writes converted weights where this CPU's kt-kernel
has the AMX quantizer (AVX-512 or AMX: init picks the demo's AMXINT8); on AVX2 init picks BF16 (the checkpoint as
it is), which probe runs and convert has nothing to do for (KT-E421, exit 3, before any interpreter starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from devtools import synthetic

ROOT = Path(__file__).resolve().parents[2]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
           "COLUMNS": "9999"}
    return subprocess.run([sys.executable, "-m", "kt_launch", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def test_demo_init_probe_convert(tmp_path, backend_python, kt_kernel):
    synthetic.demo(tmp_path / "demo")
    r = cli(tmp_path, "init", "demo/model", "-o", "my.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    method = yaml.safe_load((tmp_path / "my.yaml").read_text())["kt"]["method"]
    assert method == ("AMXINT8" if kt_kernel.implements("AMXINT8") else "BF16")

    r = cli(tmp_path, "probe", "--profile", "my.yaml", "--python", backend_python, "--json")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["result"]["ok"] and not [f for f in doc["findings"] if f["level"] == "error"]

    r = cli(tmp_path, "convert", "--profile", "my.yaml", "--out", "conv", "--python", backend_python)
    if method == "AMXINT8":
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        assert any((tmp_path / "conv").glob("_layer_*/_numa_*/*.kt"))
    else:
        assert r.returncode == 3 and "KT-E421" in r.stdout + r.stderr and not (tmp_path / "conv").exists(), r.stderr
