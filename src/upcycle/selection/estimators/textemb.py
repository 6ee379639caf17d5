"""TextEmb: SEmb through the candidate's own encoder instead of a fixed MiniLM."""

from __future__ import annotations

from ..context import SelectionContext
from .base import Estimator, register_estimator
from .semb import similarity_scores


@register_estimator
class TextEmb(Estimator):
    name = "textemb"
    summary = "cosine of mean embeddings of source data and target through the candidate's own encoder"
    fallback = "semb"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        return similarity_scores(context, own_encoder=True)
