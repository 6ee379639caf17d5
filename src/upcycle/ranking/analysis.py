"""The model-recycling study's questions, asked of our own grid. Pure functions of a gain matrix.

``gains`` is a candidates x targets DataFrame of mean gains in points (``gains.gain_matrix``), NaN where a
cell is not measured (overlapping data, or not trained yet).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


def fraction_beating_base(summary: pd.DataFrame) -> dict[str, Any]:
    """How many candidates have a positive average gain, and how many have a CI that excludes zero."""
    count = len(summary)
    positive = int((summary["avg_gain"] > 0).sum())
    significant = int((summary["ci_low"] > 0).sum())
    worse = int((summary["ci_high"] < 0).sum())
    return {"candidates": count, "positive_avg_gain": positive, "ci_above_zero": significant,
            "ci_below_zero": worse, "fraction_positive": positive / count if count else None}


def _design(cells: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Intercept plus one-hot indicators of each named factor; (cells, 1 + levels)."""
    parts = [np.ones((len(cells), 1))]
    for column in columns:
        parts.append(pd.get_dummies(cells[column]).to_numpy(float))
    return np.hstack(parts)


def _fit(design: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Least squares: (R^2, in-sample MSE, leave-one-cell-out MSE via the hat matrix)."""
    pinv = np.linalg.pinv(design)
    hat = design @ pinv
    residuals = values - hat @ values
    total = ((values - values.mean()) ** 2).sum()
    leverage = np.clip(np.diag(hat), None, 1 - 1e-9)
    loo = residuals / (1 - leverage)
    r2 = 1 - (residuals**2).sum() / total if total > 0 else float("nan")
    return float(r2), float((residuals**2).mean()), float((loo**2).mean())


def additive_model(gains: pd.DataFrame, *, shuffles: int = 200, seed: int = 0) -> dict[str, Any]:
    """Fit gain[c, t] ~ candidate effect + target effect, against a control with the gains shuffled.

    The study found the two effects largely separable: a candidate that helps one target tends to help
    others. Reports R^2, MSE and leave-one-cell-out MSE of the additive fit, of each factor alone, and the
    mean (std) of the same for ``shuffles`` random permutations of the gains over the measured cells.
    """
    cells = gains.stack().dropna().rename("gain").reset_index()
    cells.columns = ["candidate", "target", "gain"]
    values = cells["gain"].to_numpy(float)
    both = _design(cells, ["candidate", "target"])
    r2, mse, loo = _fit(both, values)
    rng = np.random.default_rng(seed)
    control = np.array([_fit(both, rng.permutation(values)) for _ in range(shuffles)])
    return {
        "cells": len(cells),
        "additive": {"r2": r2, "mse": mse, "loo_mse": loo},
        "candidate_only": dict(zip(("r2", "mse", "loo_mse"), _fit(_design(cells, ["candidate"]), values))),
        "target_only": dict(zip(("r2", "mse", "loo_mse"), _fit(_design(cells, ["target"]), values))),
        "shuffled": {
            "r2_mean": float(control[:, 0].mean()), "r2_std": float(control[:, 0].std()),
            "loo_mse_mean": float(control[:, 2].mean()), "loo_mse_std": float(control[:, 2].std()),
        },
        "variance": float(values.var()),
    }


def single_target_signal(gains: pd.DataFrame) -> dict[str, Any]:
    """How well one target's gains predict a candidate's average gain over the *other* targets (Spearman).

    A practitioner who finetunes every candidate on one cheap target gets this ranking for free.
    """
    per_target = {}
    for target in gains.columns:
        others = gains.drop(columns=target).mean(axis=1)
        own = gains[target]
        usable = own.notna() & others.notna()
        if usable.sum() >= 3:
            per_target[target] = float(stats.spearmanr(own[usable], others[usable]).statistic)
    values = np.array(list(per_target.values()))
    return {
        "per_target": per_target,
        "mean": float(values.mean()) if len(values) else None,
        "median": float(np.median(values)) if len(values) else None,
        "best": max(per_target, key=per_target.get) if per_target else None,
        "worst": min(per_target, key=per_target.get) if per_target else None,
    }


def ranking_stability(gains: pd.DataFrame, *, draws: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """For k targets drawn at random: agreement of the k-target ranking with the all-target ranking.

    Returns one row per k with the mean Kendall tau, how often the top candidate is the same, and the mean
    overlap of the top 3.
    """
    rng = np.random.default_rng(seed)
    full = gains.mean(axis=1)
    top1, top3 = full.idxmax(), set(full.nlargest(3).index)
    rows = []
    for k in range(1, gains.shape[1]):
        taus, same_top, overlap = [], 0, 0.0
        for _ in range(draws):
            subset = rng.choice(gains.columns, size=k, replace=False)
            partial = gains[subset].mean(axis=1)
            usable = partial.notna()
            taus.append(stats.kendalltau(partial[usable], full[usable]).statistic)
            same_top += partial.idxmax() == top1
            overlap += len(set(partial.nlargest(3).index) & top3) / 3
        rows.append({"targets": k, "kendall_tau": float(np.nanmean(taus)), "top1_agreement": same_top / draws,
                     "top3_overlap": overlap / draws})
    return rows


def findings(summary: pd.DataFrame, gains: pd.DataFrame) -> dict[str, Any]:
    """Every analysis in one JSON-ready dict (:func:`upcycle.report.analyze` reads them from a stored bench)."""
    return {
        "beating_base": fraction_beating_base(summary),
        "additive_model": additive_model(gains),
        "single_target_signal": single_target_signal(gains),
        "ranking_stability": ranking_stability(gains),
    }


def probe_signal(probes: dict[str, float], gains: pd.DataFrame, target: str) -> dict[str, Any]:
    """How well linear-probe accuracies on ``target`` (``{fingerprint: accuracy}``, candidates only) rank the
    candidates' average gain on the other targets, and their gain on ``target`` itself (Spearman)."""
    candidates = [fingerprint for fingerprint in probes if fingerprint in gains.index]
    probe = pd.Series({fingerprint: probes[fingerprint] for fingerprint in candidates})
    elsewhere = gains.loc[candidates].drop(columns=target, errors="ignore").mean(axis=1)
    result: dict[str, Any] = {"target": target, "candidates": len(candidates)}
    if len(candidates) >= 3:
        result["spearman_vs_avg_gain_elsewhere"] = float(stats.spearmanr(probe, elsewhere).statistic)
        if target in gains.columns:
            here = gains.loc[candidates, target]
            usable = here.notna()
            if usable.sum() >= 3:
                result["spearman_vs_gain_on_target"] = float(stats.spearmanr(probe[usable], here[usable]).statistic)
    return result
