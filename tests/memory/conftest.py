"""Sparse checkpoints of real models (full tensor lists, real headers, data as holes), built once per session."""

import json
from pathlib import Path

import pytest

from memory.support import build



@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-models")
    built = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build(root / name, name)
        return built[name]
    return get


@pytest.fixture
def profile(tmp_path):
    def write(model: Path, **sections) -> Path:
        doc = {"model": {"path": str(model)}, "runtime": {"flavor": "sglang-kt"}, "server": {"port": 39123}}
        for k, v in sections.items():
            doc[k] = {**doc.get(k, {}), **v}
        p = tmp_path / "p.yaml"
        p.write_text(json.dumps(doc))
        return p
    return write
