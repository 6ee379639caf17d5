"""SEmb: similarity of the candidate's source data and the target, as mean sentence embeddings (MiniLM).

Vu et al. (2020) and Poth et al. (2021) found this dataset-level similarity a cheap, decent predictor of
intermediate-task transfer. The source side is embedded once per candidate (amortized).
"""

from __future__ import annotations

import numpy as np

from ...training.features import normalize
from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator

SOURCE_EXAMPLES = 100


def mean_embedding_cosine(source: np.ndarray, target: np.ndarray) -> float:
    """Cosine between the means of unit-normalised rows: source (m, d), target (n, d) -> scalar."""
    a, b = normalize(source).mean(0), normalize(target).mean(0)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def similarity_scores(context: SelectionContext, *, own_encoder: bool) -> dict[str, float]:
    """Source-target cosine per candidate, through MiniLM or through each candidate's own encoder."""
    result, known = {}, 0
    for candidate in context.candidates:
        encoder = candidate if own_encoder else context.embedder
        source = context.source_features(candidate, through=encoder, n=SOURCE_EXAMPLES)
        if source is None:
            result[candidate.fingerprint] = float("nan")
            continue
        target = context.target_features(encoder)
        result[candidate.fingerprint] = mean_embedding_cosine(source, target)
        known += 1
    if known == 0:
        raise EstimatorUnavailable("no candidate has a known source task")
    return result


@register_estimator
class SEmb(Estimator):
    name = "semb"
    summary = "cosine of mean MiniLM sentence embeddings: candidate's source data vs the target"
    fallback = "random"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        return similarity_scores(context, own_encoder=False)
