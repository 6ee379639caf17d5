"""Linear probe: how well a linear model on the candidate's frozen features predicts the target.

Classification: cross-validated accuracy of a standardised logistic regression. Regression: Spearman
correlation of cross-validated ridge predictions with the targets (the metric the finetune reports).
"""

from __future__ import annotations

import numpy as np

from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator

FOLDS = 5


def folds_for(labels: np.ndarray, regression: bool, folds: int = FOLDS) -> int:
    """How many CV folds the target supports; raises EstimatorUnavailable below two."""
    if regression:
        available = len(labels) // 2
    else:
        _, counts = np.unique(labels, return_counts=True)
        if len(counts) < 2:
            raise EstimatorUnavailable("the target sample has a single class")
        available = int(counts.min())
    if available < 2:
        raise EstimatorUnavailable("too few examples per class for two cross-validation folds")
    return min(folds, available)


def cv_predictions(model, features: np.ndarray, labels: np.ndarray, *, regression: bool, seed: int) -> np.ndarray:
    """Out-of-fold predictions (n,) of ``model`` (a scikit-learn estimator)."""
    from sklearn.model_selection import (  # lazy: scikit-learn is slow to import
        KFold,
        StratifiedKFold,
        cross_val_predict,
    )

    splits = folds_for(labels, regression)
    splitter = KFold if regression else StratifiedKFold
    return cross_val_predict(model, features, labels, cv=splitter(n_splits=splits, shuffle=True, random_state=seed))


def cv_score(model, features: np.ndarray, labels: np.ndarray, *, regression: bool, seed: int) -> float:
    """Accuracy (classification) or Spearman (regression) of out-of-fold predictions."""
    from scipy.stats import spearmanr  # lazy: scipy is slow to import

    predictions = cv_predictions(model, features, labels, regression=regression, seed=seed)
    if regression:
        rho = spearmanr(predictions, labels).statistic
        return 0.0 if np.isnan(rho) else float(rho)
    return float((predictions == labels).mean())


@register_estimator
class LinearProbe(Estimator):
    name = "probe"
    summary = "cross-validated logistic (ridge for regression) probe on the candidate's frozen features"
    fallback = "logme"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression, RidgeCV  # lazy: scikit-learn is slow to import
        from sklearn.pipeline import make_pipeline  # lazy: scikit-learn is slow to import
        from sklearn.preprocessing import StandardScaler  # lazy: scikit-learn is slow to import

        labels = context.target_labels
        folds_for(labels, context.regression)  # fail before any forward pass
        head = RidgeCV(alphas=np.logspace(-2, 4, 7)) if context.regression else LogisticRegression(max_iter=2000)
        return context.score_features(self.name, lambda features: cv_score(
            make_pipeline(StandardScaler(), head), features, labels, regression=context.regression, seed=context.seed))
