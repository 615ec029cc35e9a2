"""Every worker dies with kt-launch (issue 23, item 2), with real processes: `kill -TERM` / `-HUP` / `-KILL` of
kt-launch during `convert`, `probe`, `tune` and a cold SGLang-parser read leaves no process behind, and a second
convert into the same --out is refused while the first one's worker holds it.

The worker interpreter is mostly a tiny "interpreter" that records its pid and sleeps (so the worker lives long
enough to be caught); one test uses the real kt-kernel worker of the backend venv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.conftest import backend_python  # noqa: F401  (the real kt-kernel venv)
from procs import state_after_kill

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes, PR_SET_PDEATHSIG")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lifetime")
    subprocess.run([sys.executable, str(REPO / "devtools" / "synthetic.py"), str(root / "demo"), "--quiet"], check=True,
                   cwd=REPO)
    return root / "demo"


def sleeper(tmp: Path) -> Path:
    """An 'interpreter' that records its pid (one line per start) and sleeps: a worker that never answers. Convert's
    interpreter check (the worker's "preflight" task, which runs before the conversion's worker) is answered as an
    install with torch and kt-kernel would answer it, so the conversion itself starts and is the one stopped."""
    py = tmp / "sleeper-python"
    ok = '{"ok": true, "torch": "2.9.1", "kt_kernel": "0.7.2", "safetensors": "0.7.0"}'
    py.write_text(f'#!/bin/sh\ncase "$(timeout 2 head -c 65536)" in *\'"task": "preflight"\'*) echo \'{ok}\'; exit 0;; esac\n'
                  f'echo $$ >> "{tmp}/worker.pids"\nexec sleep 300\n')
    py.chmod(0o755)
    return py


def worker_pids(tmp: Path) -> list[int]:
    p = tmp / "worker.pids"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def profile(tmp: Path, demo: Path, python: Path | str, out: Path | None = None, method: str = "AMXINT8") -> Path:
    p = tmp / "p.yaml"
    weights = out or demo / "model"
    p.write_text(f"model: {{path: {demo}/model}}\nkt: {{method: {method}, weight_path: {weights}, cpuinfer: 2, "
                 f"threadpool_count: 1}}\nruntime: {{flavor: sglang-kt, python: {python}}}\n")
    return p


class Run:
    def __init__(self, tmp: Path, args: list, env: dict | None = None):
        self.err_path = tmp / f"err-{time.monotonic_ns()}.txt"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "kt_launch", *map(str, args)], cwd=tmp,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env={**os.environ, "KT_LAUNCH_CACHE_DIR": str(tmp / "cache"), **(env or {})},
                                         start_new_session=True)

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, predicate, timeout: float = 120.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"kt-launch exited ({self.proc.returncode}) before {what}:\n{self.err[-3000:]}")
            if time.monotonic() > end:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}:\n{self.err[-3000:]}")
            time.sleep(0.05)

    def finish(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"kt-launch did not exit within {timeout}s:\n{self.err[-3000:]}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def cleanup():
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def assert_stopped_and_gone(run: Run, sig: int, workers: list[int]) -> None:
    rc = run.finish()
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == 128 + sig, run.err[-3000:]
        assert f"stopped by {signal.Signals(sig).name}" in run.err
        assert "Traceback" not in run.err
    for pid in workers:
        assert state_after_kill(pid) in ("gone", "Z", "X"), f"worker {pid} outlived kt-launch ({sig!r})"


COMMANDS = {
    "probe": lambda tmp, demo, py: ["probe", "--profile", profile(tmp, demo, sys.executable), "--python", py],
    "tune": lambda tmp, demo, py: ["tune", "--profile", profile(tmp, demo, sys.executable), "--python", py,
                                   "--threads", "1,2", "--rounds", "1", "--no-store"],
    "convert": lambda tmp, demo, py: ["convert", "--profile", profile(tmp, demo, sys.executable, tmp / "out"),
                                      "--python", py],
    "parser read": lambda tmp, demo, py: ["--profile", profile(tmp, demo, py), "--dry-run"],
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_signal_to_kt_launch_leaves_no_worker(tmp_path, demo, cleanup, command, sig):
    py = sleeper(tmp_path)
    run = Run(tmp_path, COMMANDS[command](tmp_path, demo, py))
    run.wait_for(lambda: worker_pids(tmp_path), what="the worker to start")
    workers = worker_pids(tmp_path)
    cleanup += workers
    assert workers and all(state_after_kill(p, tries=1) not in ("gone", "Z", "X") for p in workers)
    os.kill(run.proc.pid, sig)
    assert_stopped_and_gone(run, sig, workers)
    if command == "convert":
        assert sig == signal.SIGKILL or "the same command resumes" in run.err


def test_a_second_convert_is_refused_while_the_first_ones_worker_holds_the_output(tmp_path, demo, cleanup):
    py = sleeper(tmp_path)
    out = tmp_path / "out"
    args = COMMANDS["convert"](tmp_path, demo, py)
    first = Run(tmp_path, args)
    first.wait_for(lambda: worker_pids(tmp_path), what="the first worker")
    cleanup += worker_pids(tmp_path)
    second = Run(tmp_path, args)
    assert second.finish(timeout=120) == 3
    assert "KT-E551" in second.err and str(out) in second.err, second.err[-2000:]
    assert len(worker_pids(tmp_path)) == 1  # the second run started no worker
    os.kill(first.proc.pid, signal.SIGTERM)
    assert_stopped_and_gone(first, signal.SIGTERM, worker_pids(tmp_path))
    # the lock went with them: a third run gets as far as its own worker
    third = Run(tmp_path, args)
    third.wait_for(lambda: len(worker_pids(tmp_path)) == 2, what="the third run's worker")
    cleanup += worker_pids(tmp_path)
    os.kill(third.proc.pid, signal.SIGTERM)
    assert_stopped_and_gone(third, signal.SIGTERM, worker_pids(tmp_path))


def test_a_refused_conversion_leaves_no_lock_dir(tmp_path, demo):
    """The lock needs the dir; a run whose worker refuses before writing leaves no empty dir behind."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "kt_launch", "convert", "--profile",
                        profile(tmp_path, demo, sys.executable, out), "--python", "/bin/false"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 3, r.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_during_the_real_kt_kernel_probe_leaves_no_process(tmp_path, demo, backend_python, cleanup, sig):
    """The real worker (torch and kt-kernel importing, then a BF16 MoE layer, which every CPU variant runs) in the
    backend venv. SIGKILL leaves nobody to clean up: the kernel's parent-death signal stops the worker."""
    run = Run(tmp_path, ["probe", "--profile", profile(tmp_path, demo, sys.executable, method="BF16"),
                         "--python", backend_python, "--prefill-qlen", "32"])
    run.wait_for(lambda: children(run.proc.pid), what="the probe worker")
    time.sleep(0.5)  # importing torch / kt-kernel by now (that alone takes seconds)
    workers = children(run.proc.pid)
    cleanup += workers
    assert workers and all(state_after_kill(p, tries=1) not in ("gone", "Z", "X") for p in workers), \
        "the worker ended before the signal: nothing would be tested"
    os.kill(run.proc.pid, sig)
    assert_stopped_and_gone(run, sig, workers)


def test_the_stop_handlers_are_kt_launchs_only_while_it_runs(capsys):
    """cli.main called in a process (tests, an embedding tool) leaves its SIGTERM/SIGHUP handlers as they were."""
    from kt_launch.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    assert main(["schema"]) == 0
    capsys.readouterr()
    assert {s: signal.getsignal(s) for s in before} == before


def test_sigterm_inside_a_worker_run_stops_it_and_raises_stopped(tmp_path):
    """In-process: Stopped (a BaseException) comes out of run_worker, whose group is gone by then."""
    from kt_launch.core.errors import Stopped
    from kt_launch.facts.worker import run_worker

    py = sleeper(tmp_path)
    import threading

    def term_when_started():
        end = time.monotonic() + 30
        while not worker_pids(tmp_path) and time.monotonic() < end:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    class Unhandled(Exception):
        pass

    def guard(signum, frame):  # what the test process does if run_worker installed nothing (never die here)
        raise Unhandled("SIGTERM reached the test's own handler")

    old = signal.signal(signal.SIGTERM, guard)
    try:
        threading.Thread(target=term_when_started, daemon=True).start()
        with pytest.raises(Stopped) as e:
            run_worker(str(py), tmp_path / "unused.py", timeout_s=60)
        assert signal.getsignal(signal.SIGTERM) is guard  # restored after the run
    finally:
        signal.signal(signal.SIGTERM, old)
    assert e.value.exit_code == 143
    assert state_after_kill(worker_pids(tmp_path)[0]) in ("gone", "Z", "X")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_hanging_nvidia_smi_dies_with_kt_launch(tmp_path, sig):
    """The other children kt-launch starts (nvidia-smi, the router check) die with it too: a hanging nvidia-smi
    (10 s timeout) does not outlive a SIGKILLed kt-launch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\necho $$ >> "{tmp_path}/worker.pids"\nexec sleep 300\n')
    smi.chmod(0o755)
    run = Run(tmp_path, ["doctor"], env={"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"})
    run.wait_for(lambda: worker_pids(tmp_path), what="nvidia-smi to start")
    workers = worker_pids(tmp_path)
    os.kill(run.proc.pid, sig)
    assert_stopped_and_gone(run, sig, workers)
