"""Selection: rank candidate checkpoints as starting points for a new target cheaply, and judge the estimators
against a bench grid (Regret@k, NDCG)."""

from .evaluation import evaluate_selection
from .selector import Kept, Selection, Verified, select

__all__ = ["Kept", "Selection", "Verified", "evaluate_selection", "select"]
