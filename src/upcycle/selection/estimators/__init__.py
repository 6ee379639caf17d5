"""Selection estimators: cheap predictions of which checkpoint is the best starting point for a target.

Each estimator lives in its own module and registers itself under its name in :data:`ESTIMATORS`; importing
this package registers them all. :func:`upcycle.selection.estimate.estimate` runs one by name.
"""

from ..context import EstimatorUnavailable
from . import (  # noqa: F401  (each module registers its estimator)
    chance,
    combined,
    fewshot,
    knn,
    logme,
    prior,
    probe,
    ranker,
    retrieval,
    semb,
    size,
    textemb,
)
from .base import ESTIMATORS, Estimator, register_estimator

# Chosen by the rule in benchmarks/selection_minilm.sh (written before its results): the configuration nested
# leave-one-target-out picks on the converged MiniLM grid (benchmarks/results/selection_minilm.md). LogME, the
# target read through each candidate's weights, fused by rank with the prior, the candidate's record elsewhere.
DEFAULT = "logme+prior"
DEFAULT_EXAMPLES = 128  # target examples the estimators read

__all__ = ["DEFAULT", "DEFAULT_EXAMPLES", "ESTIMATORS", "Estimator", "EstimatorUnavailable", "register_estimator"]
