"""kNN: cross-validated k-nearest-neighbour accuracy (Spearman for regression) on frozen features, cosine."""

from __future__ import annotations

from ...training.features import cross_validated_score
from ..context import SelectionContext
from .base import Estimator, register_estimator
from .probe import folds_for

NEIGHBOURS = 10


@register_estimator
class KNearestNeighbours(Estimator):
    name = "knn"
    summary = "cross-validated k-nearest-neighbour score (cosine, k=10) on the candidate's frozen features"
    fallback = "logme"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor  # lazy: scikit-learn is slow to import

        labels = context.target_labels
        folds = folds_for(labels, context.regression)
        k = max(1, min(NEIGHBOURS, len(labels) * (folds - 1) // folds - 1))
        model = (KNeighborsRegressor if context.regression else KNeighborsClassifier)(n_neighbors=k, metric="cosine")
        return context.score_features(self.name, lambda features: cross_validated_score(
            model, features, labels, regression=context.regression, seed=context.seed))
