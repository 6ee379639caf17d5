"""Combined ranker: rank fusion of cheap estimators. Each member's scores become percentile ranks (ties
averaged; a candidate a member cannot score sits in the middle), and the fused score is their mean.

A member that cannot score the target is dropped with a note; the fusion needs at least one member.
"""

from __future__ import annotations

import pandas as pd

from .base import (
    Estimator,
    EstimatorUnavailable,
    SelectionContext,
    get_estimator,
    register_estimator,
)

MEMBERS = ("prior", "logme")


def rank_fusion(member_scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean percentile rank (0..1, higher better) over members; each dict maps candidate -> score."""
    ranks = pd.DataFrame(member_scores).rank(axis=1, pct=True).fillna(0.5)  # members x candidates
    return ranks.mean(axis=0).to_dict()


def fused_scores(context: SelectionContext, members: tuple[str, ...]) -> dict[str, float]:
    member_scores = []
    for member in members:
        try:
            member_scores.append(get_estimator(member).scores(context))
        except EstimatorUnavailable as error:
            context.note(f"combined: {member} dropped ({error}).")
    if not member_scores:
        raise EstimatorUnavailable(f"none of its members ({', '.join(members)}) can score this target")
    return rank_fusion(member_scores)


@register_estimator
class Combined(Estimator):
    name = "combined"
    summary = f"rank fusion of {' + '.join(MEMBERS)}"
    fallback = "semb"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        return fused_scores(context, MEMBERS)
