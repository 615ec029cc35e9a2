import subprocess

import pytest

from fleet.support import HERE, router_python


@pytest.fixture(scope="session")
def router_venv():
    """The real sglang-router 0.3.2 from the package registry, in .cache/router-venv (idempotent set-up)."""
    try:
        done = subprocess.run(["bash", str(HERE / "setup_router_venv.sh")], capture_output=True, text=True,
                              timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/fleet/setup_router_venv.sh did not finish within 900 s")
    if done.returncode != 0:
        pytest.fail(f"tests/fleet/setup_router_venv.sh failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    return router_python()
