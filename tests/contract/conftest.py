"""Session fixtures shared by the contract tests: the real-parser venvs and their facts."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from kt_launch.facts.sglang import SglangFacts, read_sglang_facts

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "tests" / "contract" / "setup_venvs.sh"
VENVS = Path(os.environ.get("KT_LAUNCH_VENVS") or REPO / ".cache" / "venvs")
DATA = REPO / "tests" / "data"

FLAVOURS = {
    "sglang-kt": {"venv": "sglang-kt", "version": "0.7.2", "dump": DATA / "parser_sglang-kt_0.7.2.json"},
    "sglang": {"venv": "sglang", "version": "0.5.23", "dump": DATA / "parser_sglang_0.5.23.json"},
}


@pytest.fixture(scope="session")
def real_venvs() -> dict[str, str]:
    """flavour -> interpreter path of its real-parser venv; builds them if needed."""
    if os.environ.get("KT_LAUNCH_NO_VENV_SETUP") != "1":
        proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=3000, check=False)
        if proc.returncode != 0:
            pytest.fail(
                f"tests/contract/setup_venvs.sh failed (exit {proc.returncode}); the contract tests need "
                f"the real sglang-kt and sglang environments.\n--- stderr ---\n{proc.stderr[-6000:]}",
                pytrace=False,
            )
    out = {}
    for flavour, spec in FLAVOURS.items():
        python = VENVS / spec["venv"] / "bin" / "python"
        if not python.exists() or not (VENVS / spec["venv"] / ".kt-launch-stamp").exists():
            pytest.fail(
                f"real-parser venv for {flavour} missing at {python.parent.parent}: run "
                "`bash tests/contract/setup_venvs.sh` (make test does)",
                pytrace=False,
            )
        out[flavour] = str(python)
    return out


@pytest.fixture(scope="session")
def facts_cache(tmp_path_factory) -> Path:
    """One facts cache for this run, shared by the pytest-xdist workers (their base temps are siblings), so
    each real parser is read once per run, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kt-launch-cache" / "sglang"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def shared_cache(facts_cache, real_facts) -> Path:
    """A KT_LAUNCH_CACHE_DIR whose sglang/ is `facts_cache`, already warm: a command run under it (doctor)
    reads each real parser's facts from there instead of starting the parser again."""
    return facts_cache.parent


@pytest.fixture(scope="session")
def real_facts(real_venvs, facts_cache) -> dict[str, SglangFacts]:
    out = {}
    with open(facts_cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker reads the parsers; the others find its cache
        for flavour, python in real_venvs.items():
            facts = read_sglang_facts(python, cache_dir=facts_cache, timeout_s=600)
            assert facts.ok, facts.error
            out[flavour] = facts
    return out


