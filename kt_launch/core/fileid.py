"""What a file is, by its content: the value facts/fileid.py returns and preflight rules read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

# Problems of a safetensors-shaped file (FileId.problem).
TOO_SMALL = "too-small"            # fewer than 8 bytes
HEADER_TOO_LARGE = "header-too-large"
HEADER_BEYOND_FILE = "header-beyond-file"  # header length points past the end of the file
HEADER_INVALID = "header-invalid"  # not UTF-8 JSON object / bad entries (e.g. cut off)
DATA_BEYOND_FILE = "data-beyond-file"      # a tensor's data_offsets end past the end of the file
TRUNCATED = (HEADER_BEYOND_FILE, DATA_BEYOND_FILE)


class Tensor(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def tensor_nbytes(dtype: str, shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return int(n * DTYPE_BYTES.get(dtype, 1))


@dataclass(frozen=True)
class FileId:
    path: str
    kind: str
    size: int = 0
    problem: str | None = None  # set when the file is not usable as its kind
    detail: str = ""  # one human line: what it is, or why it is broken
    header: bytes = field(default=b"", compare=False, repr=False)  # raw safetensors JSON header
    ntensors: int = 0

    @property
    def ok_safetensors(self) -> bool:
        return self.kind == "safetensors" and self.problem is None

    @property
    def is_torch(self) -> bool:
        return self.kind in ("torch-zip", "pickle")

    @property
    def data_bytes(self) -> int:
        return max(0, self.size - 8 - len(self.header)) if self.ok_safetensors else 0

    @cached_property
    def tensors(self) -> dict[str, Tensor]:
        """Every tensor of a valid safetensors header (parses the whole JSON: use on small files)."""
        if not self.ok_safetensors:
            return {}
        out = {}
        for name, ent in json.loads(self.header).items():
            if name != "__metadata__":
                out[name] = Tensor(ent["dtype"], tuple(ent["shape"]), tensor_nbytes(ent["dtype"], ent["shape"]))
        return out

    def describe(self) -> str:
        names = {
            "safetensors": "a safetensors file", "torch-zip": "a torch.save zip archive (pickle inside)",
            "pickle": "a raw pickle (legacy torch.save format)", "gguf": "a GGUF file", "zip": "a zip archive",
            "json": "a JSON text file", "text": "a text file", "unknown": "of unknown content",
            "directory": "a directory", "empty": "an empty file", "special": "not a regular file",
            "unreadable": "not readable", "symlink-loop": "a symlink loop", "missing": "missing",
        }
        return names.get(self.kind, self.kind)
