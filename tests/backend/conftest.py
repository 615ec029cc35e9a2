"""Fixtures for the kt-kernel backend tests.

`backend_python` is the probe's target interpreter: a venv with the real kt-kernel 0.7.2 and a CPU
torch, built by tests/backend/setup_env.sh (idempotent; `make test` runs it first). Tests that need
it skip only when that install is impossible here (no network and no cached wheels).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "tests" / "data" / "amx_sweep_h200_xeon16.json"


@pytest.fixture(scope="session")
def backend_python() -> str:
    override = os.environ.get("KT_BACKEND_PYTHON")
    if override:
        return override
    venv = Path(os.environ.get("KT_BACKEND_VENV", ROOT / ".cache" / "backend-venv"))
    try:
        proc = subprocess.run(["bash", str(HERE / "setup_env.sh")], capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "KT_BACKEND_VENV": str(venv)})
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"backend test env could not be installed: {e}")
    if proc.returncode != 0:
        pytest.skip("backend test env could not be installed (setup_env.sh failed):\n" + (proc.stdout + proc.stderr)[-1500:])
    return str(venv / "bin" / "python")


@pytest.fixture(scope="session")
def amx_data() -> dict:
    return json.loads(DATA.read_text())
