"""The pure parts of selection: LogME, ranking metrics with exact tie handling, fusion, votes, cost meter and clocks."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from upcycle.errors import ConfigError
from upcycle.selection import context
from upcycle.selection.context import BudgetExhausted, CostMeter, Sample, cost_clock
from upcycle.selection.estimators.combined import rank_fusion
from upcycle.selection.estimators.logme import log_evidence, logme, max_evidence
from upcycle.selection.estimators.retrieval import nearest_votes
from upcycle.selection.estimators.semb import mean_embedding_cosine
from upcycle.selection.metrics import (
    expected_best_of_top_k,
    ndcg,
    prediction_interval,
    rank_correlations,
    ranking_quality,
    regret_at_k,
)


def direct_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The textbook formula with the full d x d matrix A = alpha I + beta F^T F."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, log_det = np.linalg.slogdet(a)
    value = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * np.sum((f @ m - y) ** 2)
             - alpha / 2 * m @ m - log_det / 2 - n / 2 * np.log(2 * np.pi))
    return value / n


def spectral(f: np.ndarray, y: np.ndarray):
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    x = u.T @ y
    return s**2, x, float(y @ y - x @ x)


@pytest.mark.parametrize("n, d", [(60, 8), (12, 40)])  # more examples than dimensions, and fewer (the fix)
def test_log_evidence_matches_the_textbook_formula(n, d):
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(n, d)), rng.normal(size=n)
    sigma, x, outside = spectral(f, y)
    for alpha, beta in [(0.5, 2.0), (3.0, 0.7)]:
        assert log_evidence(sigma, x, outside, n, d, alpha, beta) == pytest.approx(
            direct_log_evidence(f, y, alpha, beta), rel=1e-9)


def test_small_sample_fix_changes_the_answer_when_dimensions_exceed_examples():
    rng = np.random.default_rng(1)
    f, y = rng.normal(size=(10, 50)), rng.normal(size=10)
    sigma, x, outside = spectral(f, y)
    fixed = log_evidence(sigma, x, outside, 10, 50, 2.0, 1.0)
    unfixed = fixed + (50 - len(sigma)) * np.log(2.0) / (2 * 10)  # what dropping the d - r terms gives
    assert fixed == pytest.approx(direct_log_evidence(f, y, 2.0, 1.0)) and unfixed != pytest.approx(fixed)


def test_fixed_point_maximises_the_evidence():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(80, 6))
    y = f @ rng.normal(size=6) + 0.3 * rng.normal(size=80)
    sigma, x, outside = spectral(f, y)
    best = max_evidence(sigma, x, outside, 80, 6)
    grid = [log_evidence(sigma, x, outside, 80, 6, a, b)
            for a in np.logspace(-3, 3, 25) for b in np.logspace(-3, 3, 25)]
    assert best >= max(grid) - 1e-6


def test_logme_prefers_informative_features_for_classes_and_regression():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=200)
    informative = np.eye(3)[labels] * 3 + rng.normal(size=(200, 3))
    noise = rng.normal(size=(200, 3))
    assert logme(informative, labels, regression=False) > logme(noise, labels, regression=False)
    targets = informative[:, 0] * 2 + rng.normal(size=200) * 0.1
    assert logme(informative, targets, regression=True) > logme(noise, targets, regression=True)
    assert np.isfinite(logme(rng.normal(size=(5, 64)), np.array([0, 1, 0, 1, 1]), regression=False))


def brute_force_expectation(truth, predicted, metric):
    """Average of ``metric`` over every order consistent with ``predicted`` (ties in every order)."""
    values = []
    for order in itertools.permutations(range(len(truth))):
        ranks = np.empty(len(truth))
        ranks[list(order)] = np.arange(len(truth), 0, -1)  # strictly decreasing scores in this order
        if all(predicted[a] >= predicted[b] or np.isnan(predicted[b]) for a, b in zip(order, order[1:])):
            values.append(metric(truth, ranks))
    return np.mean(values)


@pytest.mark.parametrize("predicted", [
    np.array([5.0, 4.0, 3.0, 2.0, 1.0]),
    np.array([1.0, 1.0, 1.0, 1.0, 1.0]),  # says nothing: the random baseline
    np.array([2.0, 1.0, 1.0, 1.0, 0.0]),
    np.array([0.0, np.nan, 3.0, 3.0, np.nan]),
])
def test_metrics_are_exact_expectations_over_tie_breaks(predicted):
    truth = np.array([0.70, 0.80, 0.65, 0.90, 0.60])
    for k in (1, 2, 3):
        assert regret_at_k(truth, predicted, k) == pytest.approx(
            brute_force_expectation(truth, predicted, lambda t, p, k=k: regret_at_k(t, p, k)))
    assert ndcg(truth, predicted) == pytest.approx(brute_force_expectation(truth, predicted, ndcg))


def test_regret_by_hand_and_undefined_cases():
    truth = np.array([0.5, 0.8, 0.6, 0.4])
    predicted = np.array([4.0, 1.0, 3.0, 2.0])  # order: 0.5, 0.6, 0.4, 0.8
    assert regret_at_k(truth, predicted, 1) == pytest.approx((0.8 - 0.5) / 0.8 * 100)
    assert regret_at_k(truth, predicted, 3) == pytest.approx((0.8 - 0.6) / 0.8 * 100)
    assert regret_at_k(truth, predicted, 4) == 0.0
    assert np.isnan(regret_at_k(np.array([0.0, -0.1]), predicted[:2], 1))
    # all equal predictions, k=1: expected best is the mean
    assert expected_best_of_top_k(truth, np.ones(4), 1) == pytest.approx(truth.mean())
    quality = ranking_quality(truth, -truth)  # the worst possible order
    assert quality["spearman"] == pytest.approx(-1.0) and quality["kendall"] == pytest.approx(-1.0)
    assert ranking_quality(truth, truth)["ndcg"] == pytest.approx(1.0)
    assert rank_correlations(truth, np.full(4, np.nan)) == (0.0, 0.0)


def test_rank_fusion_votes_and_cosine():
    fused = rank_fusion([{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 3.0, "b": float("nan"), "c": 2.0}])
    assert fused["c"] > fused["b"] and fused["c"] > fused["a"]
    assert fused["b"] == pytest.approx((2 / 3 + 0.5) / 2)  # a member that cannot say puts b in the middle
    broken = rank_fusion([{"a": 1.0, "z": float("nan")}, {"a": 2.0, "z": float("nan")}])
    assert broken["a"] == 1.0 and np.isnan(broken["z"])  # no member can score z (a corrupt checkpoint): last
    sources = [np.array([[1.0, 0.0], [0.9, 0.1]]), np.array([[0.0, 1.0]])]
    queries = np.array([[1.0, 0.05], [0.1, 1.0], [0.2, 0.9]])
    assert nearest_votes(sources, queries).tolist() == [1.0, 2.0]
    assert mean_embedding_cosine(np.array([[2.0, 0.0]]), np.array([[0.0, 3.0], [3.0, 0.0]])) == pytest.approx(
        np.sqrt(0.5))


def test_cost_meter_charges_a_shared_resource_once_and_enforces_a_budget():
    meter = CostMeter()
    meter.charge("features:a", 2.0)
    meter.charge("features:a", 2.0)  # LogME and the probe reading the same features
    meter.charge("source:a", 5.0, amortized=True)
    assert meter.total == 2.0 and meter.amortized_total == 5.0
    limited = CostMeter(limit=3.0, device="cpu")
    limited.charge("x", 2.0)
    with pytest.raises(BudgetExhausted, match=r"^spent 3\.50 of a 3\.00-second budget \(CPU time\)$"):
        limited.charge("y", 1.5)
    assert Sample(n=10, seed=1).key != Sample(n=10, seed=2).key


class FakeAccelerator:
    """Work on it runs asynchronously, as on a GPU: a launch returns at once and ``synchronize`` waits for it."""

    def __init__(self):
        self.done_at, self.synchronized = 0.0, []

    def launch(self, seconds: float) -> None:
        self.done_at = max(self.done_at, time.perf_counter()) + seconds

    def synchronize(self, device: str) -> None:
        self.synchronized.append(device)
        time.sleep(max(0.0, self.done_at - time.perf_counter()))


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_on_the_cpu_the_cost_is_the_processs_cpu_seconds():
    def refuse(device):
        raise AssertionError(f"synchronized {device}")

    assert cost_clock("cpu", sync=refuse) is time.process_time  # never synchronizes
    meter = CostMeter(device="cpu")
    with meter.timed("busy"):
        spin(0.3)
    with meter.timed("asleep"):
        time.sleep(0.3)
    assert meter.charges["busy"] > 0.1  # CPU time (it may trail the wall on a shared machine)
    assert meter.charges["asleep"] < 0.05  # waiting costs the CPU nothing


@pytest.mark.parametrize("device", ["cuda:1", "mps"])
def test_on_an_accelerator_the_cost_is_wall_seconds_read_after_a_synchronize(device):
    accelerator = FakeAccelerator()
    clock = cost_clock(device, sync=accelerator.synchronize)
    cpu_started = time.process_time()
    started = clock()
    accelerator.launch(0.3)  # returns at once; the work is still running on the device
    elapsed = clock() - started
    assert elapsed >= 0.3 and accelerator.synchronized == [device, device]
    assert time.process_time() - cpu_started < 0.1  # what the CPU clock would have charged for the same work


def test_a_meter_on_an_accelerator_charges_wall_seconds_and_its_budget_says_so(monkeypatch):
    accelerator = FakeAccelerator()
    monkeypatch.setattr(context, "synchronize", accelerator.synchronize)  # the default sync of cost_clock
    meter = CostMeter(device="cuda:0", limit=0.2)
    with pytest.raises(BudgetExhausted, match=r"of a 0\.20-second budget \(wall time on cuda:0\)$"):
        with meter.timed("forward"):
            accelerator.launch(0.3)
    assert meter.charges["forward"] >= 0.3 and accelerator.synchronized == ["cuda:0", "cuda:0"]


def test_a_meter_measures_on_the_device_of_upcycle_device_when_it_is_made(monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    assert CostMeter().device == "cpu"
    monkeypatch.setenv("UPCYCLE_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="Unknown device 'tpu'"):
        CostMeter()
    assert CostMeter(device="mps").device == "mps"  # an explicit device is taken as given


def test_single_seed_brute_force_is_judged_against_the_other_seeds():
    import pandas as pd

    from upcycle.selection.evaluation import single_seed_brute_force

    cells = pd.DataFrame({
        "fingerprint": ["a", "b", "c"] * 2, "target": ["t"] * 6, "seed": [0, 0, 0, 1, 1, 1],
        "score": [0.9, 0.5, 0.6, 0.4, 0.8, 0.6], "seconds": [1.0] * 6,
    })
    anchor = single_seed_brute_force(cells, "t", pd.Index(["a", "b", "c"]))
    # seed 0 picks a (0.4 on seed 1, best 0.8): 50%; seed 1 picks b (0.5 on seed 0, best 0.9): 44.4%
    assert anchor["regret_at_1"] == pytest.approx((50 + 400 / 9) / 2)
    assert single_seed_brute_force(cells[cells["seed"] == 0], "t", pd.Index(["a", "b", "c"])) is None


def test_prediction_interval_by_hand_and_its_coverage_of_a_new_draw():
    # n = 4, mean 2, sd sqrt(8/3) = 1.6330 (ddof 1): half width = t(0.975, 3) x 1.6330 x sqrt(1.25)
    # = 3.1824 x 1.6330 x 1.1180 = 5.8103
    low, high = prediction_interval(np.array([0.0, 2.0, 2.0, 4.0, np.nan]))
    assert (low, high) == pytest.approx((2 - 5.8103, 2 + 5.8103), abs=1e-3)
    assert all(np.isnan(prediction_interval(np.array([1.0, np.nan]))))
    # it covers a new draw 95% of the time (the interval of the mean would cover far less)
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(4000):
        sample = rng.normal(3.0, 5.0, size=8)
        low, high = prediction_interval(sample)
        hits.append(low <= rng.normal(3.0, 5.0) <= high)
    assert 0.935 < np.mean(hits) < 0.965
