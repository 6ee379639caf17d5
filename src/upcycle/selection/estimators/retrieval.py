"""Retrieval of Experts (Jang et al., 2023): target instances vote for the expert of their nearest neighbour.

About 100 training instances of each expert's source task and about 32 target instances are embedded with
all-MiniLM-L6-v2; each target instance votes for the expert that owns its nearest (cosine) source instance.
The score is the expert's share of the votes.
"""

from __future__ import annotations

import numpy as np

from ...training.features import nearest_votes
from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator

# The vote itself (nearest_votes) is shared with the expert LMs' router, upcycle.scoring.experts.
SOURCE_EXAMPLES = 100
QUERIES = 32

__all__ = ["QUERIES", "SOURCE_EXAMPLES", "RetrievalOfExperts", "nearest_votes"]


@register_estimator
class RetrievalOfExperts(Estimator):
    name = "retrieval"
    summary = "32 target instances vote for the expert owning their nearest source instance (MiniLM)"
    fallback = "semb"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        known, pools = [], []
        for candidate in context.candidates:
            source = context.source_features(candidate, through=context.embedder, n=SOURCE_EXAMPLES)
            if source is not None:
                known.append(candidate.fingerprint)
                pools.append(source)
        if not pools:
            raise EstimatorUnavailable("no candidate has a known source task")
        target = context.target_features(context.embedder)
        rng = np.random.default_rng(context.seed)
        queries = target[rng.choice(len(target), size=min(QUERIES, len(target)), replace=False)]
        with context.meter.timed("retrieval:votes"):
            votes = nearest_votes(pools, queries) / len(queries)
        result = {candidate.fingerprint: float("nan") for candidate in context.candidates}
        result.update(zip(known, votes.tolist()))
        return result
