"""Helpers for the operate tests: a recorded host, profiles whose runtime.python is a fake SGLang,
and kt-launch run as a real process with bounded waits. Loopback only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ports import free_port  # noqa: F401  (re-exported: the tests that start servers import it from here)

REPO = Path(__file__).resolve().parents[2]
FAKE_SOURCE = Path(__file__).with_name("fake_sglang.py")

HOST = {
    "cpu": {"model": "Test CPU", "physical_cores": 8, "logical_cpus": 16, "usable_cpus": list(range(16)),
            "flags": ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi", "avx512_bf16",
                      "amx_tile", "amx_int8", "amx_bf16"]},
    "numa": [{"id": 0, "cpus": list(range(16)), "memory_bytes": 64 << 30}],
    "memory": {"total_bytes": 64 << 30, "available_bytes": 60 << 30},
    "gpus": [{"index": 0, "name": "Test GPU", "memory_bytes": 80 << 30}],
}


def write_host(dir: Path, doc: dict | None = None) -> Path:
    p = dir / "host.json"
    p.write_text(json.dumps(doc or HOST))
    return p


def script_interpreter(path: Path, source: Path, python: str | Path | None = None) -> Path:
    """An executable 'interpreter' at `path`: a shebang naming `python` (default: this one) and `source`, so that
    `path -m sglang.launch_server ...` runs `source` with that argv (the fake SGLang, the sglang-kt stand-in)."""
    path.write_text(f"#!{python or sys.executable}\n" + source.read_text())
    path.chmod(0o755)
    return path


def make_fake(dir: Path) -> Path:
    """An executable 'interpreter' that acts as SGLang when run as `FAKE -m sglang.launch_server ...`."""
    return script_interpreter(dir / "fake-python", FAKE_SOURCE)




def plain_profile(python: str | Path, port: int, **extra) -> dict:
    doc = {
        "model": {"path": "/nonexistent/DeepSeek-V2-Lite-Chat", "served_name": "dsv2-lite"},
        "kt": {"weight_path": "/nonexistent/kt-int8", "method": "AMXINT8"},
        "server": {"host": "127.0.0.1", "port": port},
        "runtime": {"python": str(python), "flavor": "sglang-kt"},
    }
    for section, values in extra.items():
        doc.setdefault(section, {}).update(values)
    return doc


def lora_profile(python: str | Path, port: int) -> dict:
    return {
        "model": {"path": "/nonexistent/DeepSeek-V2-Lite-Chat"},
        "kt": {"weight_path": "/nonexistent/kt-int8"},
        "moe_lora": {"path": "/nonexistent/moe_lora.pt", "rank": 8, "alpha": 16.0, "sft_method": "AMXBF16_SFT"},
        "lora": {"paths": [{"name": "west-adapter", "path": "/nonexistent/checkpoint-133"}]},
        "server": {"host": "0.0.0.0", "port": port},
        "runtime": {"python": str(python), "flavor": "kt-moe-lora"},
    }


def write_profile(dir: Path, doc: dict, name: str = "profile.yaml") -> Path:
    p = dir / name
    p.write_text(yaml.safe_dump(doc))
    return p


class Launch:
    """kt-launch as a real process (own session), output in files, every wait bounded."""

    def __init__(self, dir: Path, args: list[str], env: dict[str, str]):
        self.dir = dir
        self.out_path, self.err_path = dir / "kt.out", dir / "kt.err"
        own = args[:args.index("--")] if "--" in args else list(args)  # kt-launch's own arguments
        if "--supervise" in own and "--smoke" not in own and "--smoke-timeout" not in own:
            # the fake servers answer /health only: tests of the smoke test say --smoke themselves
            args = [*own, "--smoke", "off", *args[len(own):]]
        full_env = {**os.environ, "FAKE_DIR": str(dir), **env}
        full_env.pop("KT_LAUNCH_PROFILE_DIR", None)
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "kt_launch", *args], cwd=dir, env=full_env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"kt-launch exited ({self.proc.returncode}) before {what}\n{self.err}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\nstderr:\n{self.err}")

    def wait_file(self, name: str, timeout: float = 20.0) -> str:
        p = self.dir / name
        self.wait_for(p.exists, timeout, f"{name} from the fake server")
        return p.read_text()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"kt-launch did not exit within {timeout}s\nstderr:\n{self.err}")

    def kill_all(self) -> None:
        """Test clean-up: kt-launch, and the fake server if it is still there."""
        for pid in (self.proc.pid, self.child_pid()):
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def child_pid(self) -> int | None:
        p = self.dir / "pid"
        return int(p.read_text()) if p.exists() else None


def pid_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` no longer exists (or is only a zombie awaiting its reaper)."""
    end = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return True
        except (OSError, IndexError):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


class Hang(BaseException):
    """A call that did not return in time (a BaseException: cli.main's catch-all must not turn it into exit 1)."""


def no_hang(fn, seconds: int = 10):
    """Run fn in-process; a blocking open or read (a FIFO, /dev/zero) raises Hang instead of hanging the suite
    (SIGALRM: the main thread only, as pytest and pytest-xdist's workers run tests)."""
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
