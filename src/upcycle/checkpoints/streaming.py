"""Streaming safetensors I/O for the merge engine: one tensor at a time in, one tensor at a time out.

:class:`MappedCheckpoint` memory-maps a checkpoint's safetensors shards and hands out one tensor as a
zero-copy view; :meth:`MappedCheckpoint.release` gives the pages back to the OS once the merge of that tensor
is done, so the resident set stays at a few tensors however large the models are.

:class:`StreamingWriter` knows every output tensor's name, dtype and shape before the first one is merged
(the pre-flight plan does), so it writes each shard's safetensors header first and then appends tensor bytes
as they are produced: no output state dict is ever held in memory. Shards follow Hugging Face's layout
(``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, MergeError
from .headers import TensorEntry, tensor_index

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {dtype: code for code, dtype in DTYPES.items()}
PAGE = mmap.PAGESIZE


def read_entries(files: Sequence[Path]) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint from its headers (:func:`tensor_index`), refusing dtypes torch lacks.

    Raises:
        CheckpointError: a header is unreadable, a dtype unknown, or a tensor runs past its file's end.
    """
    entries = tensor_index(files)
    for name, entry in entries.items():
        if entry.dtype not in DTYPES:
            raise CheckpointError(f"{entry.file}: tensor '{name}' has unsupported dtype {entry.dtype!r}.")
    return entries


class MappedCheckpoint:
    """Read-only memory maps over a checkpoint's shards; ``get`` returns views, ``release`` drops pages.

    Use as a context manager; the maps are closed on exit.
    """

    def __init__(self, entries: dict[str, TensorEntry]):
        self.entries = entries
        self._maps: dict[Path, mmap.mmap] = {}

    def __enter__(self) -> MappedCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        for mapped in self._maps.values():
            try:
                mapped.close()
            except BufferError:  # a caller still holds a view; the map closes when it is collected
                pass
        self._maps.clear()

    def _map(self, file: Path) -> mmap.mmap:
        if file not in self._maps:
            with file.open("rb") as handle:
                # ACCESS_COPY (a private mapping): writable as far as torch is concerned, never written
                self._maps[file] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._maps[file]

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as a view over the mapped file (shape as stored, dtype as stored)."""
        entry = self.entries[name]
        dtype = DTYPES[entry.dtype]
        count = (entry.end - entry.begin) // torch.empty((), dtype=dtype).element_size()
        if count == 0:
            return torch.empty(entry.shape, dtype=dtype)
        flat = torch.frombuffer(self._map(entry.file), dtype=dtype, count=count, offset=entry.begin)
        return flat.reshape(entry.shape)

    def release(self, name: str) -> None:
        """Tell the OS it may drop the pages behind ``name`` (they are re-read from disk if needed again)."""
        entry = self.entries[name]
        mapped = self._maps.get(entry.file)
        if mapped is None:
            return
        start = entry.begin - entry.begin % PAGE
        length = entry.end - start
        if length > 0:
            mapped.madvise(mmap.MADV_DONTNEED, start, length)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


def assign_shards(tensors: Sequence[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Split tensors, in order, into consecutive shards of at most ``max_shard_bytes`` (a larger tensor gets
    a shard of its own)."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


class StreamingWriter:
    """Write planned tensors into safetensors shards in ``folder``, one ``write`` call per tensor, in plan order.

    The header of every shard is written up front; ``close`` checks that every planned tensor was written and
    writes the index when there is more than one shard.
    """

    def __init__(self, folder: Path, tensors: Sequence[OutputTensor], max_shard_bytes: int,
                 metadata: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.shards = assign_shards(tensors, max_shard_bytes)
        self.files = shard_names(len(self.shards))
        self._order = [(file, tensor) for file, shard in zip(self.files, self.shards, strict=True) for tensor in shard]
        self._next = 0
        self._handle = None
        self._metadata = {"format": "pt", **(metadata or {})}

    def _open(self, file: str, shard: list[OutputTensor]) -> None:
        if self._handle is not None:
            self._handle.close()
        header: dict[str, object] = {"__metadata__": self._metadata}
        offset = 0
        for tensor in shard:
            header[tensor.name] = {"dtype": CODES[tensor.dtype], "shape": list(tensor.shape),
                                   "data_offsets": [offset, offset + tensor.nbytes]}
            offset += tensor.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data start is 8-byte aligned, as the format recommends
        self._handle = (self.folder / file).open("wb")
        self._handle.write(struct.pack("<Q", len(encoded)))
        self._handle.write(encoded)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next planned tensor; its name, dtype and shape must match the plan."""
        if self._next >= len(self._order):
            raise MergeError(f"Tensor '{name}' was not planned (all planned tensors are written).")
        file, planned = self._order[self._next]
        if name != planned.name or tensor.dtype != planned.dtype or tuple(tensor.shape) != planned.shape:
            raise MergeError(
                f"Tensor '{name}' {tensor.dtype} {tuple(tensor.shape)} does not match the plan's next tensor "
                f"'{planned.name}' {planned.dtype} {planned.shape}."
            )
        if self._next == 0 or self._order[self._next - 1][0] != file:
            self._open(file, self.shards[self.files.index(file)])
        if tensor.numel():
            self._handle.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
        self._next += 1

    def close(self) -> list[str]:
        """Finish the last shard and write the index; returns the shard file names."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._next != len(self._order):
            missing = [tensor.name for _, tensor in self._order[self._next:]][:5]
            raise MergeError(f"Output incomplete: {len(self._order) - self._next} planned tensor(s) unwritten "
                             f"({', '.join(missing)}...).")
        if len(self.files) > 1:
            index = {"metadata": {"total_size": sum(t.nbytes for _, t in self._order)},
                     "weight_map": {tensor.name: file for file, tensor in self._order}}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return self.files
