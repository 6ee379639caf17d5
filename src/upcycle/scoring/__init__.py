"""Zero-shot scoring with generative LMs: the log-likelihood primitive, the methods (direct, channel, flipped),
``score()``, which records results in the store, Flipped meta-training and expert LMs (one per task, retrieved
for an unseen task, merged).

Import cost: :mod:`.methods` and :mod:`.score` are light; torch and transformers load only when a model runs.
"""

from .experts import Expert, ExpertRoute, build_experts, expert_scores, list_experts, merge_experts, route
from .flip_training import FlipTrainResult, flip_train
from .methods import ALL_METHODS, CALIBRATIONS, METHODS, NORMALIZATIONS, Method, option_scores, resolve_methods
from .score import ScoreResult, score

__all__ = ["ALL_METHODS", "CALIBRATIONS", "METHODS", "NORMALIZATIONS", "Expert", "ExpertRoute", "FlipTrainResult",
           "Method", "ScoreResult", "build_experts", "expert_scores", "flip_train", "list_experts", "merge_experts",
           "option_scores", "resolve_methods", "route", "score"]
