"""What adapter_config.json says (rank, alpha, target modules), as a value read by resolve."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdapterConfig:
    path: str  # the adapter_config.json file
    peft_type: str | None
    r: int | None
    lora_alpha: float | None
    target_modules: tuple[str, ...] | None
    problem: str | None = None  # why the file could not be used, naming the file and key
