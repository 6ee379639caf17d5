"""Size baseline: bigger checkpoints first (parameter count from the safetensors headers, no tensor read).

Task heads are not counted: a 20-class head is not a bigger model, and counting it would smuggle a
"how many classes was it trained on" signal into a baseline meant to know nothing about the task.
"""

from __future__ import annotations

import math

from ...checkpoints import read_safetensors_header, resolve_checkpoint
from ..context import SelectionContext
from .base import Estimator, register_estimator

HEAD_PREFIXES = ("classifier.", "score.", "lm_head.")


def parameter_count(path: str) -> int:
    """Parameters of the checkpoint's body at ``path`` (0 for pickle weights, which have no header)."""
    checkpoint = resolve_checkpoint(path)
    if checkpoint.is_pickle:
        return 0
    total = 0
    for file in checkpoint.weight_files:
        header, _ = read_safetensors_header(file)
        total += sum(math.prod(entry["shape"]) for name, entry in header.items()
                     if name != "__metadata__" and not name.startswith(HEAD_PREFIXES))
    return total


@register_estimator
class Size(Estimator):
    name = "size"
    summary = "baseline: parameter count (ties within one architecture)"
    reads_sample = False

    def scores(self, context: SelectionContext) -> dict[str, float]:
        with context.meter.timed("size"):
            return {candidate.fingerprint: float(parameter_count(candidate.path)) for candidate in context.candidates}
