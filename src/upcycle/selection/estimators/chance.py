"""Random baseline: a seeded random order. The evaluation also reports its exact expectation."""

from __future__ import annotations

import numpy as np

from ..context import SelectionContext
from .base import Estimator, register_estimator


@register_estimator
class Random(Estimator):
    name = "random"
    summary = "baseline: a random order (seeded)"
    reads_sample = False

    def scores(self, context: SelectionContext) -> dict[str, float]:
        draws = np.random.default_rng(context.seed).random(len(context.candidates))
        return {candidate.fingerprint: float(x) for candidate, x in zip(context.candidates, draws)}
