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
    noise = pd.DataFrame(rng.normal(0, 1, (8, 6)), index=[f"c{i}" for i in range(8)],
                         columns=[f"t{j}" for j in range(6)])
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


# ---------------------------------------------------------------- designed matrices whose answers are known

# exactly additive: gain = 5 + a_c + b_t with a = (3, 1, -1, -3), b = (2, 0, -2), both centred. Sums of squares
# about the mean 5: candidates 3 * 20 = 60, targets 4 * 8 = 32, total 92 (residual 0); 12 cells, 6 parameters.
A, B = np.array([3.0, 1.0, -1.0, -3.0]), np.array([2.0, 0.0, -2.0])
ADDITIVE = pd.DataFrame(5 + A[:, None] + B[None, :], index=["c0", "c1", "c2", "c3"], columns=["t0", "t1", "t2"])

# not additive: t0 and t1 each rank two candidates the other way round from the other targets' mean; t2 ranks
# them nearly backwards (see test_single_target_signal_by_hand)
CROSSED = pd.DataFrame({"t0": [4.0, 3.0, 2.0, 1.0], "t1": [4.0, 3.0, 1.0, 2.5], "t2": [0.1, 0.2, 0.3, 0.4]},
                       index=["c0", "c1", "c2", "c3"])

# a summary with every boundary: a zero average gain is not positive, a CI touching zero does not exclude it
SUMMARY = pd.DataFrame({"avg_gain": [2.0, 0.5, 0.0, -1.0, -1.0],
                        "ci_low": [1.0, 0.0, -1.0, -2.0, -2.0],
                        "ci_high": [3.0, 1.0, 1.0, 0.0, -0.1]})


def test_fraction_beating_base_counts_by_hand():
    assert fraction_beating_base(SUMMARY) == {"candidates": 5, "positive_avg_gain": 2, "ci_above_zero": 1,
                                              "ci_below_zero": 1, "fraction_positive": 0.4}
    summary = pd.DataFrame({"avg_gain": [2.0, 0.5, -1.0], "ci_low": [1.0, -0.5, -2.0], "ci_high": [3.0, 1.5, -0.1]})
    assert fraction_beating_base(summary) == {"candidates": 3, "positive_avg_gain": 2, "ci_above_zero": 1,
                                              "ci_below_zero": 1, "fraction_positive": pytest.approx(2 / 3)}
    assert fraction_beating_base(SUMMARY.iloc[:0]) == {"candidates": 0, "positive_avg_gain": 0, "ci_above_zero": 0,
                                                       "ci_below_zero": 0, "fraction_positive": None}


def test_additive_model_by_hand_on_an_exactly_additive_matrix():
    fit = additive_model(ADDITIVE, shuffles=200)
    assert fit["cells"] == 12 and fit["variance"] == pytest.approx(92 / 12)
    assert fit["additive"] == pytest.approx({"r2": 1.0, "mse": 0.0, "loo_mse": 0.0}, abs=1e-9)
    # candidate alone: residuals are b_t, each candidate's mean has leverage 1/3, so LOO residuals are 1.5 b_t
    assert fit["candidate_only"] == pytest.approx({"r2": 60 / 92, "mse": 32 / 12, "loo_mse": 1.5**2 * 32 / 12})
    # target alone: residuals are a_c, leverage 1/4, LOO residuals (4/3) a_c
    assert fit["target_only"] == pytest.approx({"r2": 32 / 92, "mse": 60 / 12, "loo_mse": (4 / 3) ** 2 * 60 / 12})
    # shuffled gains: over random permutations E[R^2] = (p - 1) / (n - 1) = 5 / 11 exactly (p = 6, n = 12); the
    # mean of 200 is within a few standard errors (R^2 has sd ~0.2 here), far below the additive 1
    shuffled = fit["shuffled"]
    assert abs(shuffled["r2_mean"] - 5 / 11) < 0.06 and 0.1 < shuffled["r2_std"] < 0.3
    assert shuffled["loo_mse_mean"] > 1.0


def test_single_target_signal_by_hand():
    # additive: the other targets' mean is a_c + const, ranked exactly as each target: Spearman 1 everywhere
    assert single_target_signal(ADDITIVE) == {"per_target": {"t0": 1.0, "t1": 1.0, "t2": 1.0}, "mean": 1.0,
                                              "median": 1.0, "best": "t0", "worst": "t0"}
    # CROSSED, ranks ascending (1 = lowest gain) of each target and of the mean of the other two:
    #   t0 (4, 3, 2, 1) vs mean(t1, t2) = (2.05, 1.6, 0.65, 1.45) -> (4, 3, 1, 2): sum d^2 = 2, rho = 1 - 12/60 = 0.8
    #   t1 (4, 3, 1, 2) vs mean(t0, t2) = (2.05, 1.6, 1.15, 0.7)  -> (4, 3, 2, 1): sum d^2 = 2, rho = 0.8
    #   t2 (1, 2, 3, 4) vs mean(t0, t1) = (4, 3, 1.5, 1.75)       -> (4, 3, 1, 2): sum d^2 = 18, rho = 1 - 108/60 = -0.8
    signal = single_target_signal(CROSSED)
    assert signal["per_target"] == pytest.approx({"t0": 0.8, "t1": 0.8, "t2": -0.8})
    assert signal["mean"] == pytest.approx(0.8 / 3) and signal["median"] == pytest.approx(0.8)
    assert signal["best"] == "t0" and signal["worst"] == "t2"
    # a target measured on fewer than 3 candidates gives no Spearman
    sparse = CROSSED.copy()
    sparse.loc[["c0", "c1"], "t2"] = np.nan
    assert set(single_target_signal(sparse)["per_target"]) == {"t0", "t1"}


def test_ranking_stability_by_hand():
    # additive: any subset's mean is a_c + const, the full ranking exactly, whichever targets are drawn
    assert ranking_stability(ADDITIVE, draws=40) == [
        {"targets": k, "kendall_tau": 1.0, "top1_agreement": 1.0, "top3_overlap": 1.0} for k in (1, 2)]
    # two targets, full = mean = (10, 6.4, 6, 4, 1.75): c0 > c1 > c2 > c3 > c4. Either target drawn alone:
    #   t0 ranks c0 > c1 > c3 > c4 > c2: discordant pairs (c2, c3), (c2, c4); top 3 {c0, c1, c3}
    #   t1 ranks c0 > c2 > c3 > c1 > c4: discordant pairs (c1, c2), (c1, c3); top 3 {c0, c2, c3}
    # so Kendall tau (8 - 2) / 10 = 0.6, the same top candidate, 2 of the top 3: whichever is drawn
    swapped = pd.DataFrame({"t0": [10.0, 9.0, 3.0, 4.0, 3.5], "t1": [10.0, 3.8, 9.0, 4.0, 0.0]},
                           index=[f"c{i}" for i in range(5)])
    [row] = ranking_stability(swapped, draws=40)
    assert row == {"targets": 1, "kendall_tau": pytest.approx(0.6), "top1_agreement": 1.0,
                   "top3_overlap": pytest.approx(2 / 3)}
    # full (8.75, 8.5, 6, 3, 2): t0 alone puts c1 first, t1 alone agrees on c0, both keep the top 3; so the top-1
    # agreement is the share of draws that picked t1
    upset = pd.DataFrame({"t0": [7.5, 8.0, 7.0, 4.0, 1.0], "t1": [10.0, 9.0, 5.0, 2.0, 3.0]},
                         index=[f"c{i}" for i in range(5)])
    [row] = ranking_stability(upset, draws=400)
    assert 0.4 < row["top1_agreement"] < 0.6 and row["top3_overlap"] == 1.0


def test_findings_on_a_designed_matrix():
    result = findings(SUMMARY, ADDITIVE)
    assert set(result) == {"beating_base", "additive_model", "single_target_signal", "ranking_stability"}
    assert result["beating_base"] == fraction_beating_base(SUMMARY) == {
        "candidates": 5, "positive_avg_gain": 2, "ci_above_zero": 1, "ci_below_zero": 1, "fraction_positive": 0.4}
    additive = result["additive_model"]
    assert additive["cells"] == 12 and additive["additive"]["r2"] == pytest.approx(1.0)
    assert additive["candidate_only"]["r2"] == pytest.approx(60 / 92)
    assert additive["target_only"]["r2"] == pytest.approx(32 / 92)
    assert additive["shuffled"]["r2_mean"] < 0.6  # the default 200 shuffles, around 5 / 11
    assert result["single_target_signal"] == {"per_target": {"t0": 1.0, "t1": 1.0, "t2": 1.0}, "mean": 1.0,
                                              "median": 1.0, "best": "t0", "worst": "t0"}
    assert result["ranking_stability"] == [
        {"targets": k, "kendall_tau": 1.0, "top1_agreement": 1.0, "top3_overlap": 1.0} for k in (1, 2)]
    # and the non-additive design, whose single-target Spearmans are worked out above
    crossed = findings(SUMMARY, CROSSED)
    assert crossed["single_target_signal"]["per_target"] == pytest.approx({"t0": 0.8, "t1": 0.8, "t2": -0.8})
    assert crossed["additive_model"]["cells"] == 12 and crossed["additive_model"]["additive"]["r2"] < 1


def test_gain_matrix_of_a_grid_with_nothing_to_compare_is_empty():
    from upcycle.ranking import gain_matrix
    from upcycle.ranking.bench import GRID_COLUMNS

    empty = pd.DataFrame(columns=GRID_COLUMNS).astype({"is_base": bool, "seed": int, "score": float})
    assert gain_matrix(empty).empty
    rows = pd.DataFrame([{column: None for column in GRID_COLUMNS} | {"fingerprint": "c", "target": "t",
                                                                      "is_base": False, "seed": 0, "score": 0.5}])
    assert gain_matrix(rows.astype({"is_base": bool, "seed": int, "score": float})).empty  # no base measured
