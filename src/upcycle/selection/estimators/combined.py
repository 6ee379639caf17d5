"""Combined ranker: rank fusion of estimators. Each member's scores become percentile ranks (ties averaged;
a candidate a member cannot score sits in the middle; one no member can score, last), and the fused score is their
mean.

``combined`` fuses LogME, the linear probe and kNN, which read the same cached features, so the fusion
costs one forward pass per candidate like each of them. Any fusion can be asked for by joining names with
``+`` (``--estimator logme+retrieval``). A member that cannot score the target is dropped with a note.
"""

from __future__ import annotations

import pandas as pd

from ..context import EstimatorUnavailable, SelectionContext
from .base import ESTIMATORS, Estimator, register_estimator

MEMBERS = ("logme", "knn", "probe")


def rank_fusion(member_scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean percentile rank (0..1, higher better) over members; each dict maps candidate -> score. A candidate
    some member cannot score sits in the middle of that member's ranks; one that no member can score (a corrupt
    checkpoint, say) stays NaN, so that it is ranked last."""
    scores = pd.DataFrame(member_scores)  # members x candidates
    fused = scores.rank(axis=1, pct=True).fillna(0.5).mean(axis=0)
    return fused.where(scores.notna().any(axis=0)).to_dict()


class RankFusion(Estimator):
    """Rank fusion of ``members`` (estimator names)."""

    name = "fusion"
    summary = "rank fusion of the estimators joined by '+'"
    fallback = "semb"

    def __init__(self, members: tuple[str, ...] = MEMBERS):
        self.members = members
        self.reads_sample = any(ESTIMATORS.get(member).reads_sample for member in members)  # one of them does

    def scores(self, context: SelectionContext) -> dict[str, float]:
        member_scores = []
        for member in self.members:
            try:
                member_scores.append(ESTIMATORS.get(member)().scores(context))
            except EstimatorUnavailable as error:
                context.note(f"{'+'.join(self.members)}: {member} dropped ({error}).")
        if not member_scores:
            raise EstimatorUnavailable(f"none of its members ({', '.join(self.members)}) can score this target")
        return rank_fusion(member_scores)


@register_estimator
class Combined(RankFusion):
    name = "combined"
    summary = f"rank fusion of {' + '.join(MEMBERS)} (one forward pass serves all three)"
