"""Zero-shot scoring with generative LMs: the log-likelihood primitive, the methods (direct, channel, flipped) and
``score()``, which records results in the store.

Import cost: :mod:`.methods` and :mod:`.score` are light; torch and transformers load only when a model runs.
"""

from .flip_training import FlipTrainResult, flip_train
from .methods import ALL_METHODS, CALIBRATIONS, METHODS, NORMALIZATIONS, Method, option_scores, resolve_methods
from .score import ScoreResult, score

__all__ = ["ALL_METHODS", "CALIBRATIONS", "METHODS", "NORMALIZATIONS", "FlipTrainResult", "Method", "ScoreResult",
           "flip_train", "option_scores", "resolve_methods", "score"]
