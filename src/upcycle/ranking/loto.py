"""Leave-one-target-out judgement of grid-only estimators (the prior; later a learned ranker) on a gains table.

The table is candidates (rows) x targets (columns) of gains in points, such as a screened published
model-recycling table (:mod:`upcycle.ranking.published`) or a stored bench. For each target the estimator sees
every other column, predicts a score per candidate, and is judged against the candidates' measured scores on the
held-out target with :func:`upcycle.selection.metrics.ranking_quality`, so Regret@k and NDCG mean what they mean
in ``upcycle evaluate-selection``. Pure functions of frames.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..selection.metrics import ranking_quality

Predictor = Callable[[pd.DataFrame, str], pd.Series]  # (gains without the held-out target, its name) -> scores


def loto_prior(gains: pd.DataFrame) -> pd.DataFrame:
    """The prior's leave-one-target-out predictions: for each target (column), each candidate's mean gain over the
    other targets it reports (NaN where it reports none). Same shape and labels as ``gains``."""
    known = gains.notna()
    totals, counts = gains.fillna(0.0).sum(axis=1), known.sum(axis=1)
    others = counts.to_numpy()[:, None] - known.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (totals.to_numpy()[:, None] - gains.fillna(0.0).to_numpy()) / others
    return pd.DataFrame(np.where(others > 0, values, np.nan), index=gains.index, columns=gains.columns)


def loto_predictions(gains: pd.DataFrame, predictor: Predictor) -> pd.DataFrame:
    """Any predictor, left one target out: column ``t`` is ``predictor(gains without t, t)``. A learned ranker
    plugs in here; :func:`loto_prior` is the closed form of the prior."""
    return pd.DataFrame({t: predictor(gains.drop(columns=t), t).reindex(gains.index) for t in gains.columns},
                        index=gains.index)


def loto_quality(scores: pd.DataFrame, predicted: pd.DataFrame | None, ks: tuple[int, ...] = (1, 3, 5)
                 ) -> pd.DataFrame:
    """Per held-out target: :func:`ranking_quality` of ``predicted[t]`` against the measured ``scores[t]``
    (absolute scores, candidates with a score on ``t`` only). ``predicted`` None: random order, the exact
    expectation (every candidate tied). One row per target."""
    rows = []
    for target in scores.columns:
        measured = scores[target].dropna()
        guess = (np.zeros(len(measured)) if predicted is None
                 else predicted.loc[measured.index, target].to_numpy(float))
        rows.append({"target": target, "candidates": len(measured)}
                    | ranking_quality(measured.to_numpy(float), guess, ks))
    return pd.DataFrame(rows).set_index("target")


def bootstrap_mean(values: np.ndarray, *, draws: int = 10_000, level: float = 0.95, seed: int = 0
                   ) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (NaN dropped) and its percentile interval, resampling values."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)
