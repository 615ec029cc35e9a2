"""The README's lines are tests: the "Two commands" and "Use" blocks run as written after `make demo`, and the
"Writing a profile" examples plan without an error finding. A README edit that breaks a line fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()

# Each "Use" line and the exit code it must give on a machine like CI's (no SGLang, no GPU, no torch in the venv).
# A line missing here fails the test: a new README line needs its expectation.
EXPECTED = {
    "source .venv/bin/activate": {0},
    "kt-launch --help": {0},
    "kt-launch --profile deepseek-v2-lite-lora.yaml --dry-run": {3},  # the seed's /mnt/... files are not here
    "kt-launch --profile demo --dry-run --json": {0},
    "kt-launch init demo/model -o my.yaml": {0},
    "kt-launch check --profile my.yaml": {0},
    "kt-launch --profile my.yaml --set kt.cpuinfer=4 --dry-run -- --log-level debug": {0},
    "kt-launch --profile my.yaml": {3},  # a launch here without SGLang and a GPU: refused before exec
    "kt-launch --profile my.yaml --supervise": {3},
    "kt-launch --profile my.yaml --supervise --json": {3},  # the same refusal, as an `exit` event on stdout
    "kt-launch smoke --url http://127.0.0.1:30000": {4},  # nothing listens there: KT-E560
    "kt-launch bench --url http://127.0.0.1:30000 --lengths 2k": {4},  # nothing listens there: KT-E570
    "kt-launch probe --profile my.yaml": {3},  # no torch/kt-kernel in the test venv
    # with the backend venv (tests/backend/setup_env.sh): 0; without one here: 3 (no interpreter). convert: 0 on an
    # AVX-512/AMX CPU (init picks the demo's AMXINT8); on AVX2 init picks BF16, which has nothing to convert (3).
    # tests/backend/test_demo_backend.py holds both to their exact outcome on this CPU.
    'kt-launch probe --profile my.yaml --python "${KT_BACKEND_VENV:-.cache/backend-venv}/bin/python"': {0, 3},
    'kt-launch convert --profile my.yaml --out demo-conv --python "${KT_BACKEND_VENV:-.cache/backend-venv}/bin/python"':
        {0, 3},
    "kt-launch tune --profile my.yaml": {3},
    "kt-launch fit --profile my.yaml": {3},  # no GPU known: KT-E620
    "kt-launch calibrate --profile my.yaml --list": {0},  # starts nothing: lists the calibration cache
    "kt-launch export --profile my.yaml --to kubernetes -o k8s": {0},
    "kt-launch doctor --json > server.json": {0, 3},  # this machine's verdicts
    "kt-launch --profile my.yaml --host-facts server.json --no-check --dry-run": {0},
    "kt-launch profiles": {0},
    "kt-launch schema -o profile.schema.json": {0},
    "python -m kt_launch --version": {0},
}


def _block(heading: str, lang: str) -> list[str]:
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def _commands(block: str) -> list[str]:
    """Command lines without their comments; continuation lines (comments only) dropped."""
    out = []
    for line in block.splitlines():
        cmd = line.split("  #", 1)[0].strip()
        if cmd and not cmd.startswith("#"):
            out.append(cmd)
    return out


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KT_LAUNCH_", "VIRTUAL_ENV", "COLUMNS"))}
    env.update(HOME=str(tmp_path / "home"), KT_LAUNCH_CACHE_DIR=str(tmp_path / "cache"),
               PATH="/usr/local/bin:/usr/bin:/bin")  # kt-launch is not on PATH until the README puts it there
    return env


def test_two_commands_are_the_makefile_targets():
    (block,) = _block("Two commands", "sh")
    cmds = _commands(block)
    assert cmds == ["make demo", "make test"]
    targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
    assert {"demo", "test"} <= set(targets)
    named = set(re.findall(r"`make ([\w-]+)`", README))  # every `make X` the README offers is a target
    assert "test-quick" in named and named <= set(targets), named - set(targets)


def test_use_block_runs_as_written(tmp_path):
    """`make demo` (in the checkout), then every "Use" line in one shell, as a user types them, in a directory
    that holds what `make demo` made: the venv and demo/."""
    venv = REPO / ".venv"
    if not (venv / ".installed").exists():
        pytest.skip("no .venv made by `make` here (make test makes it)")
    r = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**_env(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    plan = r.stdout.split("--dry-run\n", 1)[1]  # after make's echo of the command
    assert plan.startswith("OK"), r.stdout[:500]  # the demo plan's verdict comes first
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(venv)
    (work / "demo").symlink_to(REPO / "demo")
    (block,) = _block("Use", "sh")
    cmds = _commands(block)
    assert set(cmds) == set(EXPECTED), "README Use lines and EXPECTED differ: " + repr(set(cmds) ^ set(EXPECTED))
    script = ["set -u"]
    for i, cmd in enumerate(cmds):
        redirect = "" if ">" in cmd else f">out{i}"  # a line that redirects its own output keeps it
        script.append(f"{cmd} {redirect} 2>err{i}; echo $? >rc{i}")
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, capture_output=True, text=True, timeout=900,
                       env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    for i, cmd in enumerate(cmds):
        rc = int((work / f"rc{i}").read_text())
        err = (work / f"err{i}").read_text()
        out = (work / f"out{i}").read_text() if (work / f"out{i}").exists() else ""
        assert rc in EXPECTED[cmd], f"{cmd!r}: exit {rc}\n{out[-1500:]}\n{err[-1500:]}"
        assert "Traceback" not in err and "command not found" not in err, f"{cmd!r}: {err[-1500:]}"
        if rc == 3 and out:
            assert "ERROR" in out or '"level": "error"' in out or "ERROR" in err, f"{cmd!r}: exit 3 without an error"
    assert json.loads((work / "server.json").read_text())["schema_version"] >= 1
    assert (work / "profile.schema.json").stat().st_size > 1000


@pytest.mark.parametrize("index", [0, 1])
def test_writing_a_profile_examples_have_no_error(tmp_path, index):
    blocks = _block("Writing a profile", "yaml")
    assert len(blocks) == 2
    (tmp_path / "my.yaml").write_text(blocks[0])
    (tmp_path / "lora.yaml").write_text(blocks[1])
    name = ("my.yaml", "lora.yaml")[index]
    r = subprocess.run([sys.executable, "-m", "kt_launch", "--profile", name, "--dry-run", "--json", "--no-check"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    doc = json.loads(r.stdout)
    assert [f["code"] for f in doc["findings"] if f["level"] == "error"] == []
