"""Safetensors headers: what tensors a checkpoint holds and where, read without loading a single weight.

Fingerprints, the merge pre-flight and the streaming reader all start here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError


def read_safetensors_header(file: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset where tensor data starts.

    The header maps ``name -> {dtype, shape, data_offsets}`` (offsets relative to the data start), plus
    an optional ``__metadata__`` entry.
    """
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: not a valid safetensors file ({error}).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: not a valid safetensors file (header is not an object).")
    return header, 8 + length


FLOATING_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, absolute byte range, safetensors dtype code and shape."""

    file: Path
    begin: int
    end: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING_DTYPES


def tensor_index(files: Sequence[Path]) -> dict[str, TensorEntry]:
    """Every tensor of a (possibly sharded) safetensors checkpoint, from the headers alone.

    Raises:
        CheckpointError: a header is unreadable or a tensor runs past its file's end.
    """
    entries: dict[str, TensorEntry] = {}
    for file in files:
        header, data_start = read_safetensors_header(file)
        size = file.stat().st_size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = (data_start + offset for offset in info["data_offsets"])
            if end > size:
                raise CheckpointError(f"{file}: tensor '{name}' runs past the end of the file (truncated?).")
            entries[name] = TensorEntry(file, begin, end, info["dtype"], tuple(info["shape"]))
    return entries
