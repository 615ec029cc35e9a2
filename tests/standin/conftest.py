import pytest

from operate.support import Launch


@pytest.fixture
def launches():
    """kt-launch processes started by a test; anything left is killed afterwards."""
    started: list[Launch] = []
    yield started
    for launch in started:
        if launch.proc.poll() is None or launch.child_pid():
            launch.kill_all()
