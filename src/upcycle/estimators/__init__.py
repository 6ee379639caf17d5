"""Selection estimators: cheap predictions of which checkpoint is the best starting point for a target.

Each estimator lives in its own module and registers itself under its name in :data:`REGISTRY`.
"""

from . import (  # noqa: F401
    chance,
    combined,
    fewshot,
    knn,
    logme,
    prior,
    probe,
    retrieval,
    semb,
    size,
    textemb,
)
from .base import (
    REGISTRY,
    Estimate,
    Estimator,
    EstimatorUnavailable,
    SelectionContext,
    estimate,
    get_estimator,
    register_estimator,
)

DEFAULT = "combined"
DEFAULT_EXAMPLES = 256  # target examples the estimators read

__all__ = [
    "DEFAULT", "DEFAULT_EXAMPLES", "REGISTRY", "Estimate", "Estimator", "EstimatorUnavailable", "SelectionContext", "estimate",
    "get_estimator", "register_estimator",
]
