"""The learned ranker's model on synthetic (candidate, target) tables: a planted signal is recovered, the interval
covers what it claims on new targets, and too little data is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from upcycle.selection.ranker_model import ALPHAS, TooLittleData, fit_ranker, within_target_z


def planted(targets: int, candidates: int, seed: int, noise: float = 0.5
            ) -> tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]:
    """gain = 1.0 x prior (raw points) + 2.0 x f1 z-scored within its target + noise; f1 has a scale and offset
    of its own on every target (as LogME evidence does), f2 is noise. Returns (features, gains, groups, the
    noiseless gains)."""
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for target in range(targets):
        prior = rng.normal(rng.normal(0, 2), 1.5, candidates)
        f1 = rng.normal(0, 1, candidates) * rng.uniform(0.1, 10) + rng.normal(0, 50)
        z1 = (f1 - f1.mean()) / f1.std()
        frames.append(pd.DataFrame({"prior": prior, "f1": f1, "f2": rng.normal(0, 1, candidates),
                                    "target": f"t{seed}-{target}"}))
        truth.append(1.0 * prior + 2.0 * z1)
    table = pd.concat(frames, ignore_index=True)
    clean = np.concatenate(truth)
    gains = pd.Series(clean + rng.normal(0, noise, len(clean)))
    return table[["prior", "f1", "f2"]], gains, table["target"].to_numpy(), clean


def test_a_planted_linear_signal_is_recovered_and_the_interval_covers_new_targets():
    features, gains, groups, _ = planted(targets=10, candidates=25, seed=0)
    model = fit_ranker(features, gains, groups)
    assert model.targets == 10 and model.pairs == 250 and model.alpha in ALPHAS
    weights = model.coefficients()
    assert weights["f1"] == pytest.approx(2.0, abs=0.25)  # per unit of within-target z
    assert abs(weights["f2"]) < 0.2
    assert weights["prior:raw"] == pytest.approx(1.0, abs=0.15) and abs(weights["prior"]) < 0.2  # the level, raw
    # on 20 targets it never saw: predictions follow the noiseless gain, and the 95% interval covers ~95%
    fresh, fresh_gains, fresh_groups, truth = planted(targets=20, candidates=25, seed=1)
    predicted = model.predict(fresh, fresh_groups)
    assert np.corrcoef(predicted["gain"], truth)[0, 1] > 0.97
    covered = ((fresh_gains >= predicted["low"]) & (fresh_gains <= predicted["high"])).mean()
    assert 0.9 <= covered <= 0.99, covered
    assert model.low < 0 < model.high and model.cv_rmse == pytest.approx(0.5, abs=0.15)
    # one new target at a time (groups None) is the same prediction as its rows inside a larger frame
    first = fresh_groups == fresh_groups[0]
    alone = model.predict(fresh[first])
    assert np.allclose(alone.to_numpy(), predicted[first].to_numpy())


def test_noise_features_get_the_largest_penalty_and_a_flat_prediction():
    features, _, groups, _ = planted(targets=6, candidates=20, seed=2)
    noise = pd.Series(np.random.default_rng(3).normal(0, 1, len(features)))
    model = fit_ranker(features, noise, groups)
    assert model.alpha == max(ALPHAS)
    assert model.predict(features, groups)["gain"].std() < 0.1


def test_too_little_to_train_on_is_refused_clearly():
    features, gains, groups, _ = planted(targets=3, candidates=5, seed=4)
    with pytest.raises(TooLittleData, match=r"too little to train on \(2 targets with >= 3 measured candidates; "
                                            r"the ranker needs 3\)"):
        fit_ranker(features[groups != groups[0]], gains[groups != groups[0]], groups[groups != groups[0]])
    # three targets, but one with only two measured candidates (the others' gains missing)
    thin = gains.copy()
    thin[np.flatnonzero(groups == groups[0])[2:]] = np.nan
    with pytest.raises(TooLittleData, match=r"\(2 targets"):
        fit_ranker(features, thin, groups)
    assert fit_ranker(features, gains, groups).targets == 3  # the minimum is enough


def test_within_target_z_scores_each_target_apart_and_fills_what_it_cannot_score():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 10.0, 30.0], "b": [5.0, 5.0, 5.0, np.nan, 1.0]})
    z = within_target_z(frame, np.array(["x", "x", "x", "y", "y"]))
    assert np.allclose(z["a"], [-np.sqrt(1.5), 0.0, np.sqrt(1.5), -1.0, 1.0])
    assert np.allclose(z["b"], [0.0, 0.0, 0.0, 0.0, 0.0])  # constant within x; missing and a lone value in y
