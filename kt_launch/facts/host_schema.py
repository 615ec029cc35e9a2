"""Pydantic schema of the host-facts JSON (`doctor --json`, `--host-facts`), for strict reading."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Bounds keep a recorded (or hand-edited) file from describing a machine that cannot exist: the largest
# hosts have a few thousand CPUs. Without them `logical_cpus: 1e9` would allocate a billion CPU ids.
MAX_CPUS = 1 << 16
CpuId = Annotated[int, Field(ge=0, lt=MAX_CPUS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CpuFile(_Strict):
    model: str = "unknown"
    physical_cores: int = Field(ge=1, le=MAX_CPUS)
    logical_cpus: int = Field(ge=1, le=MAX_CPUS)
    usable_cpus: list[CpuId] = Field(default=[], max_length=MAX_CPUS)
    usable_physical_cores: int | None = Field(default=None, ge=1, le=MAX_CPUS)
    flags: list[str] = []


class NumaFile(_Strict):
    id: int = Field(ge=0, lt=MAX_CPUS)
    cpus: list[CpuId] = Field(default=[], max_length=MAX_CPUS)
    memory_bytes: int = Field(default=0, ge=0)


class MemoryFile(_Strict):
    total_bytes: int = Field(ge=0)
    available_bytes: int = Field(ge=0)


class GpuFile(_Strict):
    index: int = Field(ge=0)
    name: str = ""
    memory_bytes: int = Field(default=0, ge=0)
    uuid: str = ""
    numa_node: int | None = Field(default=None, ge=0, lt=MAX_CPUS)  # absent in files recorded before it existed


class HostFactsFile(_Strict):
    cpu: CpuFile
    numa: list[NumaFile] = []
    memory: MemoryFile
    gpus: list[GpuFile] = []
