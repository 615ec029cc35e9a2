"""Model facts that travel: what the memory plan needs from a model dir, recorded on the machine that has it
(`kt-launch doctor --model DIR --json > model.json`) and read back elsewhere (`--model-facts model.json`).

The record holds config.json as read (re-parsed by facts/model.py `shape_from_config`, so a recorded shape is
checked exactly like a live one) and the checkpoint's bytes by role (core/memory.py `WeightBytes`, summed from the
safetensors headers by facts/weights.py). No tensor data and no file contents beyond config.json are recorded.
The file goes through the bounded reader, and every field is validated strictly (a count of `true`, NaN or -1 is
refused, naming the field), like a `--host-facts` file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from kt_launch.core.memory import WeightBytes
from kt_launch.core.model import ModelFacts
from kt_launch.core.output import SCHEMA_VERSION
from kt_launch.facts.host_schema import MAX_BYTES

KEY = "model_facts"  # the doctor --json key; a --model-facts file may be that whole document or the object alone
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]
Name = Annotated[str, Field(max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class WeightsFile(_Strict):
    expert_by_layer: dict[Annotated[str, Field(pattern=r"^[0-9]{1,6}$")], Bytes] = Field(max_length=1 << 16)
    expert_by_dtype: dict[Name, Bytes] = Field(default={}, max_length=256)
    nonexpert_by_dtype: dict[Name, Bytes] = Field(default={}, max_length=256)
    replicated_bytes: Bytes = 0
    sharded_bytes: Bytes = 0
    kv_proj_bytes: Bytes = 0
    skipped_bytes: Bytes = 0
    tensors: int = Field(default=0, ge=0, le=1 << 32)


class ModelFactsFile(_Strict):
    path: str = Field(default="", max_length=4096)
    config: dict[str, Any]  # config.json as read; shape_from_config checks it
    weights: WeightsFile | None = None  # None: the dir had no readable safetensors shard


def record_model(path: str) -> dict[str, Any]:
    """The `model_facts` object for a model dir: config.json and the headers' bytes by role. Raises
    ModelConfigError (config.json missing or not a MoE shape), naming the file."""
    from kt_launch.facts.artifacts import file_cache, model_dir_facts
    from kt_launch.facts.model import ModelConfigError, shape_from_config
    from kt_launch.facts.reader import MODEL_CONFIG, Missing, ReadError, read_json
    from kt_launch.facts.weights import weight_bytes

    p = Path(path) / "config.json"
    try:
        cfg = read_json(p, MODEL_CONFIG)
    except Missing:
        raise ModelConfigError(f"{p}: not found; --model must be a HuggingFace model directory") from None
    except ReadError as e:
        raise ModelConfigError(str(e)) from None
    model = shape_from_config(cfg, str(p))
    w = weight_bytes(model_dir_facts(path, file_cache()), model)
    weights = None if w is None else {**w.to_json(), "tensors": w.tensors}
    for k in ("expert_bytes", "nonexpert_bytes"):
        if weights is not None:
            weights.pop(k, None)  # derived sums: recomputed from the parts when read back
    return {"path": os.fspath(path), "config": cfg, "weights": weights}


def model_from_record(data: Any, source: str) -> tuple[ModelFacts, WeightBytes | None]:
    """(ModelFacts, WeightBytes or None) from a record (the doctor document or its `model_facts` object).
    Raises ValueError naming the field."""
    from kt_launch.facts.model import shape_from_config

    if isinstance(data, dict) and KEY in data:
        data = data[KEY]
    f = ModelFactsFile.model_validate(data)
    model = shape_from_config(f.config, "config")
    w = f.weights
    if w is None:
        return model, None
    by_layer = {int(k): v for k, v in w.expert_by_layer.items()}
    weights = WeightBytes(dict(sorted(by_layer.items())), dict(w.expert_by_dtype), dict(w.nonexpert_by_dtype),
                          w.replicated_bytes, w.sharded_bytes, w.kv_proj_bytes, w.skipped_bytes, w.tensors,
                          f.path or source)
    return model, weights


def _known_version(data: Any, p: Path, flag: str) -> None:
    """`schema_version`, where the record has one (the doctor document; its `model_facts` object alone has none), must
    be a version this kt-launch writes: a record of a newer one may mean other things by the same fields, so it is
    refused rather than read as this one (issue 23)."""
    for where, doc in (("schema_version", data), (f"{KEY}.schema_version", data.get(KEY) if isinstance(data, dict)
                                                   else None)):
        if not isinstance(doc, dict) or "schema_version" not in doc:
            continue
        v = doc["schema_version"]
        if type(v) is not int or v != SCHEMA_VERSION:
            shown = repr(v)[:40]
            raise ValueError(f"{flag} {p}: {where} is {shown}; this kt-launch reads version {SCHEMA_VERSION} "
                             "(record it again with this kt-launch: `kt-launch doctor --model DIR --json`)")


def load_model_facts(path: str | os.PathLike, flag: str = "--model-facts") -> tuple[ModelFacts, WeightBytes | None]:
    """Read a `--model-facts` file through the bounded reader. Raises ValueError naming the file and field."""
    from kt_launch.facts.host import _short_validation
    from kt_launch.facts.reader import MODEL_FACTS, Missing, ReadError, read_json

    p = Path(path)
    try:
        data = read_json(p, MODEL_FACTS)
    except Missing:
        raise ValueError(f"{flag} {p}: no such file; record one where the model is with "
                         f"`kt-launch doctor --model DIR --json > {p.name}`") from None
    except ReadError as e:
        raise ValueError(f"{flag} {e.file}: {e.reason}") from None
    _known_version(data, p, flag)
    if isinstance(data, dict) and KEY not in data and "config" not in data:
        raise ValueError(f"{flag} {p}: no `{KEY}` in it; record it with `kt-launch doctor --model DIR --json` "
                         "(a host-facts file recorded without --model has none)")
    try:
        return model_from_record(data, str(p))
    except ValueError as e:  # pydantic ValidationError and ModelConfigError are ValueErrors
        raise ValueError(f"{flag} {p}: {_short_validation(e)}") from None
