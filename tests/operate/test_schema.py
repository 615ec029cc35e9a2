"""`kt-launch schema`: the committed schema/profile.schema.json never drifts from the pydantic model, and every
bundled profile points at it and validates against it."""

import json

import pytest
import yaml

from kt_launch.cli import main
from operate.support import REPO

COMMITTED = REPO / "schema" / "profile.schema.json"
PROFILES = sorted((REPO / "configs").glob("*.yaml"))
HEADER = "# yaml-language-server: $schema=../schema/profile.schema.json"


def current(capsys) -> str:
    assert main(["schema"]) == 0
    return capsys.readouterr().out


def test_committed_schema_equals_current_output(capsys):
    assert COMMITTED.read_text(encoding="utf-8") == current(capsys), \
        "schema/profile.schema.json is stale: run `kt-launch schema -o schema/profile.schema.json`"


def test_schema_output_option(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["schema", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == current(capsys)
    assert main(["schema", "--output", str(tmp_path / "missing-dir" / "s.json")]) == 2


def test_schema_shape():
    doc = json.loads(COMMITTED.read_text())
    assert doc["$schema"].startswith("https://json-schema.org/")
    assert {"extends", "model", "kt", "moe_lora", "lora", "server", "runtime"} <= set(doc["properties"])
    assert doc.get("additionalProperties") is False  # typos are flagged in the editor too


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_bundled_profile_points_at_the_schema_and_validates(profile):
    assert profile.read_text().splitlines()[0] == HEADER
    assert (profile.parent / "../schema/profile.schema.json").resolve() == COMMITTED.resolve()
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(COMMITTED.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    jsonschema.validate(yaml.safe_load(profile.read_text()), schema)


def test_schema_rejects_a_typo():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(COMMITTED.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": {"path": "/m"}, "kt": {"cpu_infer": 4}}, schema)
    jsonschema.validate({"extends": "base.yaml", "kt": {"cpuinfer": 4}}, schema)  # a child profile
