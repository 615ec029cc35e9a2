"""LoRA adapter facts: what `adapter_config.json` says (rank, alpha, target modules), read strictly."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from kt_launch.core.adapters import AdapterConfig
from kt_launch.facts.reader import ADAPTER_CONFIG, Missing, ReadError, read_json


def read_adapter_config(adapter_dir: str | Path) -> AdapterConfig | None:
    """None when there is no adapter_config.json; an AdapterConfig with `problem` set when it is unusable."""
    p = Path(adapter_dir) / "adapter_config.json"
    try:
        data = read_json(p, ADAPTER_CONFIG)  # bounded: special files, deep nesting, duplicate keys refused
    except Missing:
        return None
    except ReadError as e:
        if _symlink_loop(adapter_dir):  # the dir itself is a symlink loop: no adapter here (preflight: KT-E203)
            return None
        return AdapterConfig(str(p), None, None, None, None, str(e))
    if not isinstance(data, dict):
        return AdapterConfig(str(p), None, None, None, None, f"{p}: top level is not a JSON object")
    r, alpha, tm = data.get("r"), data.get("lora_alpha"), data.get("target_modules")
    problems = []
    if not (isinstance(r, int) and not isinstance(r, bool) and r > 0):
        problems.append(f"`r` must be a positive integer (got {_short(r)})")
        r = None
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0):
        problems.append(f"`lora_alpha` must be a positive number (got {_short(alpha)})")
        alpha = None
    if isinstance(tm, str):
        tm = (tm,)
    elif isinstance(tm, list) and all(isinstance(x, str) for x in tm):
        tm = tuple(tm)
    else:
        problems.append(f"`target_modules` must be a list of module names (got {_short(tm)})")
        tm = None
    peft = data.get("peft_type")
    if not isinstance(peft, str):
        peft = None
    problem = f"{p}: " + "; ".join(problems) if problems else None
    return AdapterConfig(str(p), peft, r, None if alpha is None else float(alpha), tm, problem)


def _symlink_loop(path: str | Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
