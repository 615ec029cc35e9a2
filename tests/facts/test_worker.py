"""The one worker client: real child processes (this Python and small shell scripts), every outcome a value."""

from __future__ import annotations

import json
import stat
import sys
import textwrap
import time

import pytest

from kt_launch.facts import worker as w
from procs import state_after_kill


def _script(tmp_path, body: str, name: str = "fake") -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def _py(tmp_path, body: str) -> str:
    p = tmp_path / "worker_script.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


def test_answer_args_stdin_and_env_reach_the_worker(tmp_path):
    script = _py(tmp_path, """
        import json, os, sys
        print("noise before the answer")
        print(json.dumps({"args": sys.argv[1:], "stdin": sys.stdin.read(), "env": os.environ.get("KT_X")}))
    """)
    r = w.run_worker(sys.executable, script, ("a", "b"), stdin="hello", env={"KT_X": "1"}, timeout_s=60)
    assert r.ok and r.error_kind is None and r.returncode == 0
    assert dict(r.answer) == {"args": ["a", "b"], "stdin": "hello", "env": "1"}


def test_module_mode(tmp_path):
    r = w.run_worker(sys.executable, args=("--compact",), module="json.tool", stdin='{"x": 1}', timeout_s=60)
    assert r.ok and r.answer == {"x": 1}


def test_large_stdin_and_answer_do_not_deadlock(tmp_path):
    script = _py(tmp_path, """
        import json, sys
        data = sys.stdin.read()
        sys.stderr.write("e" * 200000)
        print(json.dumps({"n": len(data), "pad": "x" * 300000}))
    """)
    r = w.run_worker(sys.executable, script, stdin="y" * 2_000_000, timeout_s=60)
    assert r.ok and r.answer["n"] == 2_000_000 and len(r.stderr_tail) == w.STDERR_TAIL_CHARS


def test_missing_and_unrunnable_interpreters(tmp_path):
    r = w.run_worker(str(tmp_path / "no" / "python"), "x.py", timeout_s=10)
    assert r.error_kind == w.NOT_FOUND and "not found" in r.message and r.answer is None
    notexec = tmp_path / "python"
    notexec.write_text("")
    assert w.run_worker(str(notexec), "x.py", timeout_s=10).error_kind == w.NOT_FOUND
    with pytest.raises(ValueError):
        w.run_worker(sys.executable, "x.py", module="json.tool")


def test_no_answer_keeps_status_and_stderr_tail(tmp_path):
    py = _script(tmp_path, "echo 'not json {'; echo '[1, 2]'; echo boom >&2; exit 3\n")
    r = w.run_worker(py, "ignored", timeout_s=10)
    assert r.error_kind == w.NO_ANSWER and r.returncode == 3 and "status 3" in r.message and r.stderr_tail == "boom"


def test_death_by_signal_is_named(tmp_path):
    py = _script(tmp_path, "echo oops >&2; kill -ILL $$\n")
    r = w.run_worker(py, "ignored", timeout_s=10)
    assert r.error_kind == w.CRASHED and r.signal == "SIGILL" and "SIGILL" in r.message and "oops" in r.stderr_tail


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    py = _script(tmp_path, f"sleep 60 & echo $! > {pidfile}; echo waiting >&2; wait\n")
    t0 = time.monotonic()
    r = w.run_worker(py, "ignored", timeout_s=1.0)
    assert r.error_kind == w.TIMEOUT and "1 s" in r.message and time.monotonic() - t0 < 20
    assert r.stderr_tail == "waiting"
    pid = int(pidfile.read_text())
    state = state_after_kill(pid)
    assert state in ("Z", "X", "gone"), state


def test_runaway_stdout_is_cut_off(tmp_path):
    py = _script(tmp_path, "yes '{\"a\": 1}'\n")
    r = w.run_worker(py, "ignored", timeout_s=30, max_stdout_bytes=1 << 20)
    assert r.error_kind == w.OVERSIZE and r.answer is None


def test_result_is_frozen():
    r = w.WorkerResult({"a": 1})
    with pytest.raises(Exception):
        r.answer = None  # type: ignore[misc]
    assert json.dumps(dict(r.answer))
