"""The exact k-th largest magnitude over a whole model, in two streaming passes and constant memory.

TIES can trim each task vector over the whole model instead of per tensor: keep the top ``density`` of all
its entries at once. Sorting a model's concatenated delta would hold it all in memory; instead this is a
radix select on float32 bit patterns. For x >= 0 the order of the bit patterns is the order of the values,
so pass one counts entries by their top 16 bits (2^15 bins: the sign bit is 0), finds the bin holding the
k-th largest, and pass two counts the low 16 bits of the entries in that bin alone. The result is the exact
float32 value that ``torch.kthvalue`` would give over the concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

HIGH_BINS = 1 << 15  # |x| has a zero sign bit
LOW_BINS = 1 << 16


def _float_bits(chunk: torch.Tensor) -> torch.Tensor:
    """|chunk| as float32 bit patterns, flat (n,) int64 (so shifts and masks stay non-negative)."""
    return chunk.detach().abs().to(torch.float32).reshape(-1).view(torch.int32).to(torch.int64)


def _select(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest entry (bins ordered by value) and its rank within the bin (1 = top)."""
    from_top = counts.flip(0).cumsum(0)
    index = int(torch.searchsorted(from_top, torch.tensor(k, dtype=from_top.dtype)))
    above = int(from_top[index - 1]) if index else 0
    return len(counts) - 1 - index, k - above


def kth_largest_magnitude(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> float:
    """The k-th largest |x| over every entry of every tensor that ``chunks()`` yields (called twice).

    ``chunks`` must yield the same tensors, any shapes, both times. ``1 <= k <= total entries``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    high = torch.zeros(HIGH_BINS, dtype=torch.int64)
    for chunk in chunks():
        high += torch.bincount(_float_bits(chunk) >> 16, minlength=HIGH_BINS)
    if int(high.sum()) < k:
        raise ValueError(f"k = {k} exceeds the {int(high.sum())} entries.")
    top, rank = _select(high, k)
    low = torch.zeros(LOW_BINS, dtype=torch.int64)
    for chunk in chunks():
        bits = _float_bits(chunk)
        low += torch.bincount(bits[(bits >> 16) == top] & 0xFFFF, minlength=LOW_BINS)
    bottom, _ = _select(low, rank)
    return torch.tensor([(top << 16) | bottom], dtype=torch.int32).view(torch.float32).item()
