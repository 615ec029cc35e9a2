"""`make demo`: build the synthetic tree, then the bundled demo profile plans without errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from preflight.support import AMX_HOST, run_cli

REPO = Path(__file__).resolve().parents[2]


def test_demo_tree_and_profile(tmp_path):
    import subprocess
    import sys

    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo.yaml", tmp_path / "configs" / "demo.yaml")
    r = subprocess.run([sys.executable, str(REPO / "devtools" / "synthetic.py"), "demo/", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout == "", r.stderr
    for p in ("model/config.json", "model/model.safetensors.index.json", "kt-amxint8", "moe_lora.pt",
              "lora/adapter_config.json", "lora/adapter_model.safetensors"):
        assert (tmp_path / "demo" / p).exists(), p
    cfg = json.loads((tmp_path / "demo" / "lora" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (8, 16.0)
    size = sum(f.stat().st_size for f in (tmp_path / "demo").rglob("*") if f.is_file())
    assert size < 10 << 20  # a few MB: kt-kernel tiles need hidden 128, moe_intermediate 256 (AMXINT4, 2 pools)
    (tmp_path / "host.json").write_text(json.dumps(AMX_HOST))
    r = run_cli("--profile", "configs/demo.yaml", "--dry-run", "--json", "--host-facts", "host.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert [f for f in doc["findings"] if f["level"] == "error"] == []
    assert doc["resolved"]["moe_lora.rank"]["value"] == 8
    # Building again over an existing tree works (make demo twice).
    r = subprocess.run([sys.executable, str(REPO / "devtools" / "synthetic.py"), "demo/", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


def test_synthetic_refuses_to_replace_foreign_dirs(tmp_path):
    from devtools.synthetic import main

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "precious.txt").write_text("mine")
    assert main([str(tmp_path), "--quiet"]) == 2
    assert (tmp_path / "model" / "precious.txt").read_text() == "mine"
    assert main([str(tmp_path / "fresh"), "--quiet"]) == 0
    assert main([str(tmp_path / "fresh"), "--quiet"]) == 0  # its own tree is rebuilt
