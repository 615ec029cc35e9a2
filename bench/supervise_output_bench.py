"""The supervisor's throughput before ready, and how fast it honours Ctrl+C under hostile output (issue 23, item 1).

A real kt-launch --supervise process runs the stand-in server tests/operate/fake_sglang.py in mode `preflood`:
before /health answers at all it writes long lines of `None, ` and then MB of start-up lines that each match phase
patterns (every line holds needles: the matcher's worst case per line). Its writes block on a full pipe, so the time
they take is kt-launch's throughput; kt-launch's own CPU seconds come from /proc.

    .venv/bin/python bench/supervise_output_bench.py            # the issue's target: 1 MB line + 20 MB
    .venv/bin/python bench/supervise_output_bench.py --long-lines 60 --flood-mb 0   # 60 MB of 1 MB lines

Target: a 1 MB line of `None, ` and 20 MB of output before ready in under 2 s of kt-launch's CPU, and Ctrl+C
honoured within 1 s while 1 MB lines of `None, ` keep coming. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from operate.support import Launch, free_port, make_fake, plain_profile, write_host, write_profile  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def start(tmp: Path, env: dict[str, str]) -> Launch:
    port = free_port()
    prof = write_profile(tmp, plain_profile(make_fake(tmp), port))
    args = ["--profile", str(prof), "--host-facts", str(write_host(tmp)), "--no-check", "--supervise",
            "--grace-period", "5"]
    return Launch(tmp, args, {"FAKE_MODE": "preflood", "FAKE_READY_AFTER": "0", **env})


def throughput(long_kb: float, long_lines: int, flood_mb: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        launch = start(tmp, {"FAKE_LONG_KB": str(long_kb), "FAKE_LONG_LINES": str(long_lines),
                             "FAKE_FLOOD_MB": str(flood_mb)})
        try:
            took = float(launch.wait_file("preflood_s", timeout=600))
            launch.wait_for(lambda: "is ready" in launch.err, timeout=60, what="the ready banner")
            cpu = cpu_seconds(launch.proc.pid)
            t0 = time.monotonic()
            launch.signal(signal.SIGINT)
            rc = launch.finish(timeout=30)
            return {"writer_s": took, "kt_launch_cpu_s": cpu, "sigint_exit_s": time.monotonic() - t0, "rc": rc,
                    "mb": (long_kb * long_lines / 1000) + flood_mb}
        finally:
            launch.kill_all()


def ctrl_c_latency(long_kb: float) -> float:
    """SIGINT while 1 MB lines of `None, ` stream in before ready: seconds until kt-launch says it is stopping."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        launch = start(tmp, {"FAKE_LONG_KB": str(long_kb), "FAKE_LONG_LINES": "100000", "FAKE_FLOOD_MB": "0",
                             "FAKE_CLEANUP": "0.05"})
        try:
            launch.wait_file("pid", timeout=60)
            time.sleep(2.0)  # the flood is under way
            t0 = time.monotonic()
            launch.signal(signal.SIGINT)
            launch.wait_for(lambda: "SIGINT: stopping SGLang" in launch.err, timeout=120, what="the stop")
            seen = time.monotonic() - t0
            launch.finish(timeout=60)
            return seen
        finally:
            launch.kill_all()


LINES = {  # 20 MB of each through the supervisor's Tee and PhaseTracker, in this process
    "plain (no needle)": b"[2026-01-01 00:00:01 TP0] Decode batch. #running-req: 1, #token: 123, token usage: 0.00\n",
    "every line matches phases": b"[2026-01-01 00:00:01 TP0] Loading safetensors checkpoint shards: 42% Load weight "
                                 b"KT cuda graph Error: not really\n",
    "every line holds needles, none matches": b"[2026-01-01 00:00:01 TP0] decode batch, error rate 0.0, xception, "
                                              b"cuda out of mem, numa, none\n",
}


def in_process(mb: float = 20.0) -> None:
    """CPU seconds of the output path alone (Tee + PhaseTracker, output discarded) for kinds of lines."""
    import collections

    from kt_launch.run.loop import PhaseTracker, Tee

    for name, line in LINES.items():
        block = line * ((1 << 20) // len(line))
        tracker = PhaseTracker()
        tee = Tee(set(), lambda d: None, collections.deque(maxlen=40), tracker)
        t0 = time.process_time()
        for _ in range(int(mb)):
            tee.feed(block)
        tracker.flush()
        print(f"in-process, {mb:g} MB, {name}: {time.process_time() - t0:.2f} s CPU")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long-kb", type=float, default=1000.0, help="kB of `None, ` per long line (default 1000)")
    ap.add_argument("--long-lines", type=int, default=1)
    ap.add_argument("--flood-mb", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), Python {platform.python_version()}")
    in_process()
    for i in range(a.repeat):
        try:
            r = throughput(a.long_kb, a.long_lines, a.flood_mb)
        except AssertionError as e:  # kt-launch too slow or stuck: say so in one line (its stderr is huge)
            print(f"run {i + 1}: failed: {str(e).splitlines()[0][:200]}")
            continue
        print(f"run {i + 1}: {r['mb']:.0f} MB before ready ({a.long_lines} x {a.long_kb:g} kB `None, ` line(s) + "
              f"{a.flood_mb:g} MB start-up lines): writer {r['writer_s']:.2f} s, kt-launch CPU "
              f"{r['kt_launch_cpu_s']:.2f} s (whole run), SIGINT to exit {r['sigint_exit_s']:.2f} s, rc {r['rc']}")
    for i in range(a.repeat):
        try:
            seen = f"seen after {ctrl_c_latency(a.long_kb):.3f} s"
        except AssertionError as e:
            seen = f"failed: {str(e).splitlines()[0][:200]}"
        print(f"Ctrl+C during {a.long_kb:g} kB `None, ` lines before ready: {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
