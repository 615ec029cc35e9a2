"""Fixtures for the kt-kernel backend tests.

`backend_python` is the probe's target interpreter: a venv with the real kt-kernel 0.7.2 and a CPU
torch, built by tests/backend/setup_env.sh (idempotent; `make test` runs it first). Tests that need
it skip only when that install is impossible here (no network and no cached wheels).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
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


# The C++ classes of kt_kernel_ext.moe that each probed method runs on (kt-kernel 0.7.2: utils/amx.py
# `_HAS_*_SUPPORT` for inference, sft/amx.py `_SFT_METHOD_TO_CLASS` for SFT); a variant implements a
# method when it has one of them. MOE_INT8's class is in no variant of the 0.7.2 wheel.
METHOD_CLASSES = {
    "AMXINT8": ("AMXInt8_MOE",),
    "AMXINT4": ("AMXInt4_MOE",),
    "BF16": ("AMXBF16_MOE", "AVX2BF16_MOE"),
    "AMXBF16_SFT": ("AMXBF16_SFT_MOE",),
    "AMXINT8_SFT": ("AMXInt8_SFT_MOE",),
    "AMXINT4_SFT": ("AMXInt4_SFT_MOE",),
    "MOE_INT8": ("Int8_KERNEL_MOE",),
}

_INTROSPECT = """
import json, os, kt_kernel, kt_kernel_ext.moe as m
print(json.dumps({"variant": kt_kernel.__cpu_variant__, "classes": [n for n in dir(m) if "MOE" in n],
                  "forced": os.environ.get("KT_KERNEL_CPU_VARIANT")}))
"""


@dataclass(frozen=True)
class LoadedKtKernel:
    """What the real kt-kernel loads here, in the environment the tests run in (an exported
    KT_KERNEL_CPU_VARIANT included, as every probe subprocess inherits it)."""

    variant: str
    classes: frozenset[str]
    forced: str | None

    def implements(self, method: str) -> bool:
        return any(c in self.classes for c in METHOD_CLASSES[method])

    def pick(self, methods) -> list[str]:
        return [m for m in methods if self.implements(m)]

    def lacking(self) -> list[str]:
        return [m for m in METHOD_CLASSES if not self.implements(m)]


@pytest.fixture(scope="session")
def kt_kernel(backend_python) -> LoadedKtKernel:
    out = subprocess.run([backend_python, "-c", _INTROSPECT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return LoadedKtKernel(d["variant"], frozenset(d["classes"]), d["forced"])


@pytest.fixture(scope="session")
def amx_data() -> dict:
    return json.loads(DATA.read_text())
