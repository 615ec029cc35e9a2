"""The JSON Schema of profiles (`kt-launch schema`), from the pydantic model, for editors and CI.

Profiles point at the committed copy with a first line `# yaml-language-server: $schema=../schema/profile.schema.json`.
The model itself does not know `extends:` (the YAML source resolves it before validation), so it is added here.
The schema judges one file, and a file may get values from its `extends:` parent, env or `--set`, so no key is
`required` here; kt-launch checks the merged profile (model.path is required there).
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _drop_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_drop_required(v) for v in node]
    return node


def profile_schema() -> dict[str, Any]:
    from kt_launch.core.profile import UserConfig

    schema = _drop_required(UserConfig.model_json_schema())
    props = schema.setdefault("properties", {})
    props = {"extends": {"type": "string", "title": "Extends",
                         "description": "A base profile, relative to this file; its values are merged under these."},
             **props}
    return {"$schema": SCHEMA_DIALECT, **{k: v for k, v in schema.items() if k != "properties"},
            "title": "kt-launch profile", "properties": props}


def profile_schema_text() -> str:
    return json.dumps(profile_schema(), indent=2, ensure_ascii=False) + "\n"
