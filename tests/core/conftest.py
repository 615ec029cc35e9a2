import json
from pathlib import Path

import pytest

from core.support import XEON16


@pytest.fixture
def host_file(tmp_path):
    p = tmp_path / "host.json"
    p.write_text(json.dumps(XEON16))
    return p


@pytest.fixture
def write_profile(tmp_path):
    def write(text: str, name: str = "p.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write
