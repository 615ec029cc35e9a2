"""Pydantic schema of the host-facts JSON (`doctor --json`, `--host-facts`), for strict reading."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CpuFile(_Strict):
    model: str = "unknown"
    physical_cores: int = Field(ge=1)
    logical_cpus: int = Field(ge=1)
    usable_cpus: list[int] = []
    usable_physical_cores: int | None = Field(default=None, ge=1)
    flags: list[str] = []


class NumaFile(_Strict):
    id: int = Field(ge=0)
    cpus: list[int] = []
    memory_bytes: int = Field(default=0, ge=0)


class MemoryFile(_Strict):
    total_bytes: int = Field(ge=0)
    available_bytes: int = Field(ge=0)


class GpuFile(_Strict):
    index: int = Field(ge=0)
    name: str = ""
    memory_bytes: int = Field(default=0, ge=0)
    uuid: str = ""


class HostFactsFile(_Strict):
    cpu: CpuFile
    numa: list[NumaFile] = []
    memory: MemoryFile
    gpus: list[GpuFile] = []
