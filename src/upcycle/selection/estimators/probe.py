"""Linear probe: how well a linear model on the candidate's frozen features predicts the target.

Classification: cross-validated accuracy of a standardised logistic regression. Regression: Spearman
correlation of cross-validated ridge predictions with the targets (the metric the finetune reports). The probe
itself is :func:`upcycle.training.linear_probe_score`, the same one ``upcycle analyze --probe-target`` runs.
"""

from __future__ import annotations

import numpy as np

from ...errors import TaskError
from ...training import linear_probe_score
from ...training.features import probe_folds
from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator


def folds_for(labels: np.ndarray, regression: bool) -> int:
    """How many CV folds the target sample supports; EstimatorUnavailable (fall back) below two."""
    try:
        return probe_folds(labels, regression)
    except TaskError as error:
        raise EstimatorUnavailable(str(error)) from None


@register_estimator
class LinearProbe(Estimator):
    name = "probe"
    summary = "cross-validated logistic (ridge for regression) probe on the candidate's frozen features"
    fallback = "logme"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        labels = context.target_labels
        folds_for(labels, context.regression)  # fail before any forward pass
        return context.score_features(self.name, lambda features: linear_probe_score(
            features, labels, regression=context.regression, seed=context.seed))
