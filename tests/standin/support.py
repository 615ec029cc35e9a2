"""Helpers for tests that use the sglang-kt stand-in (tests/standin/sglang_kt.py).

- make_standin(dir, python): an executable that kt-launch can run as `runtime.python -m sglang.launch_server ...`
  (the same mechanism as tests/operate/fake_sglang.py): a shebang naming `python` (the backend venv's, for a
  recorder that writes real .pt files with torch) and the stand-in's source.
- Standin: the stand-in started on its own (`--port 0`: it binds and prints its port), for `--url` tests; stop()
  ends it and waits for it, so nothing is left running.
- backend_python(): the backend test venv's interpreter (torch, kt-kernel), or None when it is not built.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from operate.support import script_interpreter

SOURCE = Path(__file__).with_name("sglang_kt.py")
REPO = Path(__file__).resolve().parents[2]


def backend_python() -> Path | None:
    base = Path(os.environ.get("KT_BACKEND_VENV", REPO / ".cache/backend-venv"))
    py = base / "bin/python"
    return py if py.exists() else None


def make_standin(dir: Path, python: str | Path | None = None, name: str = "standin-python") -> Path:
    """An executable 'interpreter' that serves as sglang-kt when run as `EXE -m sglang.launch_server ...`."""
    return script_interpreter(Path(dir) / name, SOURCE, python)


class Standin:
    """The stand-in as a process of its own on a free loopback port (bound by itself: no port race)."""

    def __init__(self, dir: Path, mode: str = "good", args: tuple[str, ...] = (), env: dict | None = None,
                 python: str | Path | None = None, timeout: float = 20.0):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        full = {**os.environ, "STANDIN_MODE": mode, "STANDIN_DIR": str(self.dir), "STANDIN_READY_AFTER": "0",
                **(env or {})}
        self.err_path = self.dir / "standin.err"
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([str(python or sys.executable), str(SOURCE), "--port", "0", *args],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=full,
                                         start_new_session=True)
        line = self._first_line(timeout)
        if not line.startswith("STANDIN_PORT="):
            self.stop()
            raise AssertionError(f"the stand-in did not start: {line!r}\n{self.err}")
        self.port = int(line.split("=", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _first_line(self, timeout: float) -> str:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self.proc.stdout.readline().decode(errors="replace").strip()

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def requests(self) -> int:
        p = self.dir / "requests"
        return int(p.read_text()) if p.exists() else 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "Standin":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


EVENTS_SCHEMA = REPO / "schema" / "supervise-events.schema.json"


def read_events(stdout: str) -> list[dict]:
    """`--supervise --json`'s stdout as events: every line one JSON object that validates against
    schema/supervise-events.schema.json and has no field the schema does not declare (nothing else on stdout)."""
    import json

    import jsonschema

    schema = json.loads(EVENTS_SCHEMA.read_text())
    events = []
    for line in stdout.splitlines():
        doc = json.loads(line)  # a server log line here would fail: stdout is only JSON under --json
        jsonschema.validate(doc, schema)
        declared = schema["$defs"][doc["event"]]["properties"]
        assert set(doc) <= set(declared), set(doc) - set(declared)
        events.append(doc)
    return events
