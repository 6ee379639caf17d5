"""Screening weights where they enter the zoo: NaN and inf found in the raw safetensors bytes, without torch.

A float is non-finite exactly when all its exponent bits are set, so each tensor is read as unsigned integers
of its width straight from a memory map and masked: no copy of the checkpoint, no float conversion, and the
same test for bf16 (which numpy has no float type for) as for float16, float32 and float64.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .headers import tensor_index
from .resolve import Checkpoint

EXPONENT_BITS = {  # safetensors dtype -> (unsigned type of its width, mask of its exponent bits)
    "F64": (np.uint64, np.uint64(0x7FF0000000000000)),
    "F32": (np.uint32, np.uint32(0x7F800000)),
    "F16": (np.uint16, np.uint16(0x7C00)),
    "BF16": (np.uint16, np.uint16(0x7F80)),
}
CHUNK = 1 << 24  # elements masked at a time: bounds the temporary arrays whatever the tensor's size


def nonfinite_count(raw: memoryview, dtype: str) -> int:
    """How many NaN or inf values the little-endian tensor bytes ``raw`` of safetensors ``dtype`` hold."""
    unsigned, mask = EXPONENT_BITS[dtype]
    values = np.frombuffer(raw, dtype=np.dtype(unsigned).newbyteorder("<"))
    return sum(int(np.count_nonzero(values[i:i + CHUNK] & mask == mask)) for i in range(0, len(values), CHUNK))


def first_nonfinite_tensor(files: Sequence[Path]) -> tuple[str, int] | None:
    """``(tensor name, count)`` of the first tensor (by name) holding NaN or inf in a safetensors checkpoint's
    ``files``; None when every floating tensor is finite."""
    entries = tensor_index(files)
    with ExitStack() as stack:
        views = {}
        for file in files:
            if file.stat().st_size == 0:
                continue
            with file.open("rb") as handle:
                mapped = stack.enter_context(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            views[file] = stack.enter_context(memoryview(mapped))
        for name in sorted(entries):
            entry = entries[name]
            if entry.dtype in EXPONENT_BITS and entry.end > entry.begin:
                bad = nonfinite_count(views[entry.file][entry.begin:entry.end], entry.dtype)
                if bad:
                    return name, bad
    return None


def require_finite_weights(checkpoint: Checkpoint) -> None:
    """Raise CheckpointError naming the first tensor of ``checkpoint`` that holds NaN or inf. Pickle weights
    (allowed only on request) cannot be read without unpickling and are not screened here."""
    if checkpoint.is_pickle:
        return
    found = first_nonfinite_tensor(checkpoint.weight_files)
    if found is not None:
        name, bad = found
        raise CheckpointError(f"{checkpoint.path}: tensor '{name}' holds {bad} NaN or inf value(s); the checkpoint "
                              "is corrupt and was not added.")
