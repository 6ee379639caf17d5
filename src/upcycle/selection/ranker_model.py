"""The learned ranker's model (pure): a ridge regression of a candidate's gain on a target, in points over the
base, from features of the (candidate, target) pair, trained on other targets and judged leave-one-target-out.

Rows are (candidate, target) pairs; ``groups`` says which target each row belongs to. Features are put on a
common footing *within each target*: every feature is z-scored across that target's candidates (an estimator's
scale, LogME evidence or kNN accuracy, means nothing from one target to the next; its order among the candidates
does). The level features (:data:`LEVEL_FEATURES`: the prior, itself a gain in points) are also kept raw, so the
model can predict an absolute gain and not only an order. A missing value becomes the target's average (z = 0;
a missing raw level becomes 0 points: no gain over the base).

The ridge penalty ``alpha`` is chosen by leave-one-target-out cross-validation on the training targets (every
fold holds out one whole target, as a new target would be). The 95% prediction interval is split-conformal in
spirit: the empirical 2.5% and 97.5% quantiles of those held-out-target residuals, added to the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UpcycleError

LEVEL_FEATURES = ("prior",)  # gains in points: also entered raw, so the model predicts a gain, not only an order
ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))  # ridge penalties tried (on standardised columns)
MIN_TARGETS = 3  # training targets needed ...
MIN_CANDIDATES = 3  # ... each with at least this many measured candidates
COVERAGE = 0.95


class TooLittleData(UpcycleError):
    """Fewer than :data:`MIN_TARGETS` training targets with :data:`MIN_CANDIDATES` measured candidates each."""


def within_target_z(features: pd.DataFrame, groups: pd.Series | np.ndarray) -> pd.DataFrame:
    """Each column z-scored across the rows of the same group (population std); a constant column, a missing
    value or a group of one becomes 0 (the group's average). Same shape and labels as ``features``."""
    keys = np.asarray(groups)
    grouped = features.groupby(keys)
    mean = grouped.transform("mean")
    std = grouped.transform("std", ddof=0)
    z = (features - mean) / std.where(std > 1e-12)
    return z.fillna(0.0)


def design(features: pd.DataFrame, groups: pd.Series | np.ndarray, level: Sequence[str]) -> pd.DataFrame:
    """The regression's columns: every feature z-scored within its target (``name``), and each level feature also
    raw (``name:raw``, missing = 0 points)."""
    z = within_target_z(features, groups)
    raw = features[[name for name in level if name in features.columns]].fillna(0.0).add_suffix(":raw")
    return pd.concat([z, raw], axis=1)


@dataclass(frozen=True)
class RankerModel:
    """A fitted ranker: standardised ridge coefficients, the chosen ``alpha``, and the interval's residual
    quantiles (``low`` < 0 < ``high`` typically, in points)."""

    features: tuple[str, ...]  # the feature columns it reads (all-missing ones were dropped before fitting)
    level: tuple[str, ...]
    columns: tuple[str, ...]  # design columns, in coefficient order
    center: np.ndarray  # (columns,) standardisation of the design columns
    scale: np.ndarray
    coef: np.ndarray  # (columns,) on the standardised columns
    intercept: float
    alpha: float
    low: float  # empirical residual quantiles of the leave-one-target-out predictions
    high: float
    targets: int
    pairs: int
    cv_rmse: float  # of the held-out-target predictions at ``alpha``
    cv_errors: dict[float, float]  # alpha -> mean squared held-out-target error

    def coefficients(self) -> dict[str, float]:
        """``{design column: coefficient per unit of that column}`` (not standardised), for reports."""
        return {name: float(c / s) for name, c, s in zip(self.columns, self.coef, self.scale)}

    def predict(self, features: pd.DataFrame, groups: pd.Series | np.ndarray | None = None) -> pd.DataFrame:
        """``gain``, ``low``, ``high`` (points) per row of ``features``; ``groups`` None: all rows are one target
        (the usual case: a new target's candidates)."""
        frame = features.reindex(columns=list(self.features))
        keys = np.zeros(len(frame), dtype=int) if groups is None else np.asarray(groups)
        x = design(frame, keys, self.level).reindex(columns=list(self.columns)).fillna(0.0).to_numpy(float)
        gain = ((x - self.center) / self.scale) @ self.coef + self.intercept
        return pd.DataFrame({"gain": gain, "low": gain + self.low, "high": gain + self.high}, index=features.index)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    return center, np.where(scale > 1e-12, scale, 1.0)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Ridge on standardised columns: (coef, intercept, center, scale)."""
    from sklearn.linear_model import Ridge  # lazy: scikit-learn is slow to import

    center, scale = _standardise(x)
    model = Ridge(alpha=alpha).fit((x - center) / scale, y)
    return np.asarray(model.coef_, float), float(model.intercept_), center, scale


def held_out_target_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alpha: float) -> np.ndarray:
    """Leave-one-target-out predictions (each target predicted by a ridge fitted on the others): (rows,)."""
    from sklearn.model_selection import LeaveOneGroupOut  # lazy: scikit-learn is slow to import

    predicted = np.empty(len(y))
    for train, test in LeaveOneGroupOut().split(x, y, groups):
        coef, intercept, center, scale = _ridge(x[train], y[train], alpha)
        predicted[test] = ((x[test] - center) / scale) @ coef + intercept
    return predicted


def fit_ranker(
    features: pd.DataFrame, gains: pd.Series, groups: pd.Series | np.ndarray, *,
    level: Sequence[str] = LEVEL_FEATURES, alphas: Sequence[float] = ALPHAS, coverage: float = COVERAGE,
    min_targets: int = MIN_TARGETS, min_candidates: int = MIN_CANDIDATES,
) -> RankerModel:
    """Fit the ranker on (candidate, target) rows: ``features`` (rows x feature names), ``gains`` (points, same
    rows) and ``groups`` (the target of each row).

    Rows without a gain are dropped, and so are targets with fewer than ``min_candidates`` measured rows; with
    fewer than ``min_targets`` targets left, :class:`TooLittleData`. ``alpha`` minimises the mean squared error of
    leave-one-target-out predictions (ties: the larger penalty); the interval is that CV's residual quantiles.
    """
    keys = pd.Series(np.asarray(groups), index=features.index)
    y_all = pd.Series(np.asarray(gains, float), index=features.index)
    keep = y_all.notna()
    counts = keys[keep].value_counts()
    enough = counts[counts >= min_candidates].index
    keep &= keys.isin(enough)
    if len(enough) < min_targets:
        raise TooLittleData(f"too little to train on ({len(enough)} target{'' if len(enough) == 1 else 's'} with >= "
                            f"{min_candidates} measured "
                            f"candidates; the ranker needs {min_targets})")
    frame = features[keep]
    frame = frame.loc[:, frame.notna().any(axis=0)]  # a feature never measured on the training rows says nothing
    if frame.shape[1] == 0:
        raise TooLittleData("too little to train on (no feature was measured on the training targets)")
    y, key = y_all[keep].to_numpy(float), keys[keep].to_numpy()
    level = tuple(name for name in level if name in frame.columns)
    table = design(frame, key, level)
    x = table.to_numpy(float)
    errors: dict[float, float] = {}
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in sorted(alphas, reverse=True):  # ties keep the larger penalty
        predicted = held_out_target_predictions(x, y, key, alpha)
        errors[float(alpha)] = float(np.mean((y - predicted) ** 2))
        if best is None or errors[float(alpha)] < best[1] - 1e-12:
            best = (float(alpha), errors[float(alpha)], predicted)
    assert best is not None
    alpha, mse, predicted = best
    tail = (1 - coverage) / 2
    low, high = np.quantile(y - predicted, [tail, 1 - tail])
    coef, intercept, center, scale = _ridge(x, y, alpha)
    return RankerModel(features=tuple(frame.columns), level=level, columns=tuple(table.columns), center=center,
                       scale=scale, coef=coef, intercept=intercept, alpha=alpha, low=float(low), high=float(high),
                       targets=len(enough), pairs=int(len(y)), cv_rmse=float(np.sqrt(mse)),
                       cv_errors=dict(sorted(errors.items())))
