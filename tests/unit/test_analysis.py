"""The study's analyses on synthetic gain matrices with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from upcycle.ranking.analysis import (
    additive_model,
    findings,
    fraction_beating_base,
    ranking_stability,
    single_target_signal,
)


def _additive(noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    candidate = rng.normal(0, 2, 8)
    target = rng.normal(0, 1, 6)
    values = candidate[:, None] + target[None, :] + rng.normal(0, noise, (8, 6))
    frame = pd.DataFrame(values, index=[f"c{i}" for i in range(8)], columns=[f"t{j}" for j in range(6)])
    frame.iloc[0, 0] = np.nan  # an overlap cell, left out
    return frame


def test_additive_model_recovers_separable_gains_and_beats_the_shuffled_control():
    exact = additive_model(_additive(noise=0.0), shuffles=50)
    assert exact["cells"] == 47
    assert exact["additive"]["r2"] == pytest.approx(1.0) and exact["additive"]["loo_mse"] == pytest.approx(0, abs=1e-9)
    noisy = additive_model(_additive(noise=0.5), shuffles=50)
    assert noisy["additive"]["r2"] > noisy["candidate_only"]["r2"] > noisy["target_only"]["r2"]
    assert noisy["additive"]["loo_mse"] < noisy["shuffled"]["loo_mse_mean"] - 3 * noisy["shuffled"]["loo_mse_std"]
    assert noisy["shuffled"]["r2_mean"] < noisy["additive"]["r2"]


def test_pure_noise_is_not_better_than_shuffled():
    rng = np.random.default_rng(1)
    noise = pd.DataFrame(rng.normal(0, 1, (8, 6)), index=[f"c{i}" for i in range(8)], columns=[f"t{j}" for j in range(6)])
    fit = additive_model(noise, shuffles=100)
    assert abs(fit["additive"]["loo_mse"] - fit["shuffled"]["loo_mse_mean"]) < 3 * fit["shuffled"]["loo_mse_std"]


def test_single_target_signal_and_ranking_stability():
    gains = _additive(noise=0.1)
    signal = single_target_signal(gains)
    assert set(signal["per_target"]) == set(gains.columns) and signal["mean"] > 0.9
    rows = ranking_stability(gains, draws=50)
    assert [row["targets"] for row in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["kendall_tau"] >= rows[0]["kendall_tau"] > 0.7
    assert all(0 <= row["top1_agreement"] <= 1 and 0 <= row["top3_overlap"] <= 1 for row in rows)


def test_fraction_beating_base_and_full_analysis():
    summary = pd.DataFrame({"avg_gain": [2.0, 0.5, -1.0], "ci_low": [1.0, -0.5, -2.0], "ci_high": [3.0, 1.5, -0.1]})
    assert fraction_beating_base(summary) == {"candidates": 3, "positive_avg_gain": 2, "ci_above_zero": 1,
                                              "ci_below_zero": 1, "fraction_positive": pytest.approx(2 / 3)}
    result = findings(summary, _additive(noise=0.3))
    assert set(result) == {"beating_base", "additive_model", "single_target_signal", "ranking_stability"}
