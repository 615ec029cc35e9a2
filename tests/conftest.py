"""Suite-wide settings. In CI (CI=true) Hypothesis runs derandomized: the same few thousand examples
every run, so a landing is never decided by a lucky draw; locally every run explores new inputs.

The suite runs under pytest-xdist (`make test`: one worker per CPU). Each worker gets its own
kt-launch cache folder, so no two workers share a tuning or SGLang-facts cache; tests that exercise
the cache look-up order (XDG_CACHE_HOME, HOME) set or clear KT_LAUNCH_CACHE_DIR themselves."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")


@pytest.fixture(scope="session", autouse=True)
def _worker_cache_dir(tmp_path_factory):
    """A kt-launch cache of this worker's own (tmp_path_factory's base is per worker under xdist)."""
    old = os.environ.get("KT_LAUNCH_CACHE_DIR")
    os.environ["KT_LAUNCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("kt-launch-cache"))
    yield
    if old is None:
        os.environ.pop("KT_LAUNCH_CACHE_DIR", None)
    else:
        os.environ["KT_LAUNCH_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _unwrapped_text(monkeypatch):
    """kt-launch wraps prose to $COLUMNS: tests read substrings, so they get lines that do not wrap, whatever the
    length of their tmp paths (a test of the wrapping itself sets COLUMNS again; the README test clears it)."""
    monkeypatch.setenv("COLUMNS", "9999")


@pytest.fixture
def launches():
    """kt-launch processes started by a test (tests/operate/support.py Launch); anything left is killed afterwards."""
    started: list = []
    yield started
    for launch in started:
        if launch.proc.poll() is None or launch.child_pid():
            launch.kill_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus):
    """On a failed run, one line before the ERRORS/FAILURES sections: the first failure's own message and the free
    disk. CI shows a short window of the output around its first error; a full disk (every later `tmp_path` fails at
    set-up) and a real failure must be told apart from that window alone."""
    bad = terminalreporter.stats.get("error", []) + terminalreporter.stats.get("failed", [])
    if bad:
        first = bad[0]
        crash = getattr(getattr(first, "longrepr", None), "reprcrash", None)
        message = ((crash.message if crash is not None else str(first.longrepr)).splitlines() or ["?"])[0][:300]
        free = []
        for where in (os.getcwd(), os.environ.get("TMPDIR", "/tmp")):
            try:
                st = os.statvfs(where)
                free.append(f"{where} {st.f_bavail * st.f_frsize / 2**30:.1f} GiB free")
            except OSError as e:
                free.append(f"{where} ({e.strerror})")
        terminalreporter.write_line(
            f"first of {len(bad)} failures/errors: {first.nodeid} ({getattr(first, 'when', '?')}): {message}; "
            f"disk: {', '.join(free)}")
    return (yield)
