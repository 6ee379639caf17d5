"""How good a predicted ranking of candidates is, given their true scores: pure functions of two vectors.

``truth`` (n,) holds each candidate's measured score on the target (mean over seeds); ``predicted`` (n,)
the estimator's scores, higher is better, NaN for "cannot say". Ties in ``predicted`` are broken uniformly
at random and every metric is its exact expectation over those tie-breaks, so an estimator that says
nothing (all scores equal) scores exactly the random baseline.
"""

from __future__ import annotations

from math import comb

import numpy as np
from scipy import stats
from scipy.stats import kendalltau, spearmanr


def _tie_groups(predicted: np.ndarray) -> list[np.ndarray]:
    """Indices grouped by equal predicted score, best group first; NaN forms the last group."""
    values = np.where(np.isnan(predicted), -np.inf, predicted)
    return [np.flatnonzero(values == v) for v in sorted(set(values.tolist()), reverse=True)]


def expected_best_of_top_k(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """Expected best true score among the top ``k`` of the predicted order."""
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    k = min(k, len(truth))
    best, taken = -np.inf, 0
    for group in _tie_groups(predicted):
        if taken + len(group) <= k:
            best, taken = max(best, truth[group].max()), taken + len(group)
            if taken == k:
                return float(best)
            continue
        # a random r of the m tied candidates make the cut: P(the i-th best of them is the best drawn)
        r, values = k - taken, np.sort(truth[group])[::-1]
        m = len(values)
        chances = np.array([comb(m - i, r - 1) for i in range(1, m + 1)], dtype=float) / comb(m, r)
        return float((chances * np.maximum(values, best)).sum())
    return float(best)


def regret_at_k(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """(M - best true score in the predicted top k) / M x 100, M the best true score; NaN when M <= 0."""
    top = float(np.max(truth))
    if top <= 0:
        return float("nan")
    return (top - expected_best_of_top_k(truth, predicted, k)) / top * 100


def ndcg(truth: np.ndarray, predicted: np.ndarray) -> float:
    """NDCG of the whole predicted order, relevance = truth min-max scaled to [0, 1] on this target.

    A tie group spread over positions p..q gives each member the mean discount of those positions.
    """
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    spread = truth.max() - truth.min()
    if spread == 0:
        return 1.0  # every order is ideal
    relevance = (truth - truth.min()) / spread
    discounts = 1 / np.log2(np.arange(2, len(truth) + 2))
    given, position = np.empty(len(truth)), 0
    for group in _tie_groups(predicted):
        given[group] = discounts[position:position + len(group)].mean()
        position += len(group)
    ideal = (np.sort(relevance)[::-1] * discounts).sum()
    return float((relevance * given).sum() / ideal)


def rank_correlations(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(Spearman, Kendall tau-b) of predicted vs true scores; 0 when either side is constant."""
    predicted, truth = np.asarray(predicted, float), np.asarray(truth, float)
    known = ~np.isnan(predicted)
    if not known.any():
        return 0.0, 0.0
    filled = np.where(known, predicted, predicted[known].min() - 1)  # "cannot say" ranks last, tied
    if np.ptp(filled) == 0 or np.ptp(truth) == 0:
        return 0.0, 0.0
    return float(spearmanr(truth, filled).statistic), float(kendalltau(truth, filled).statistic)


def bootstrap_mean_interval(
    values: np.ndarray, *, rng: np.random.Generator, draws: int = 2000, level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (n,), NaN left out; (NaN, NaN) when none is left."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    means = rng.choice(values, size=(draws, len(values))).mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def prediction_interval(values: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for one more draw of what produced ``values`` (n,), NaN left out: mean +- t(n-1) x sd x
    sqrt(1 + 1/n). Where the values are a candidate's gains on other targets, it is the interval of its gain on a
    new target, not of its average gain (which is narrower by about sqrt(n + 1)). (NaN, NaN) when n < 2."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    mean, spread = float(values.mean()), float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * spread * float(np.sqrt(1 + 1 / len(values)))
    return mean - half, mean + half


def ranking_quality(truth: np.ndarray, predicted: np.ndarray, ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, float]:
    """Regret@k for each k, NDCG, Spearman and Kendall in one dict."""
    spearman, kendall = rank_correlations(truth, predicted)
    quality = {f"regret_at_{k}": regret_at_k(truth, predicted, k) for k in ks}
    return quality | {"ndcg": ndcg(truth, predicted), "spearman": spearman, "kendall": kendall}
