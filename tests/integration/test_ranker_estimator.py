"""The learned ranker on a tiny store: three tiny experts and a bench over four small shared targets whose results
are planted (no finetune runs), so what the ranker should learn, and what it must never read, is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml
from conftest import save_tiny_bert

from upcycle.ranking import plan_bench
from upcycle.selection import select
from upcycle.selection.context import Sample, SelectionContext
from upcycle.selection.estimate import estimate
from upcycle.selection.estimators import ranker as ranker_module
from upcycle.selection.estimators.prior import stored_gains
from upcycle.selection.estimators.ranker import ranker_gain_intervals, training_targets
from upcycle.specs import FinetuneResult
from upcycle.store import Store
from upcycle.tasks import load_task, overlapping
from upcycle.zoo import zoo_add

FAST = {"max_train": 48, "max_eval": 48, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}
SOURCES = ("sst2", "trec_coarse", "financial_phrasebank")
TARGETS = ("poem_sentiment", "cb", "stsb", "wnli")
BASE_SCORE = 0.5
# planted gains in points: the sst2 expert helps everywhere, the trec_coarse one is neutral, the third hurts
GAINS = {"sst2": (3.0, 4.0, 2.0, 3.0), "trec_coarse": (0.0, 1.0, -1.0, 0.0),
         "financial_phrasebank": (-3.0, -2.0, -4.0, -3.0)}


def plant(store: Store, bench, gains: dict[str, tuple[float, ...]]) -> None:
    """Store a result for every cell of ``bench``: the base at BASE_SCORE, a candidate at BASE_SCORE + gain."""
    sources = {c.checkpoint.fingerprint: c.source_task for c in bench.candidates}
    for candidate, target, seed in bench.cells():
        spec = bench.spec(candidate, target, seed)
        source = sources.get(candidate.checkpoint.fingerprint)
        score = BASE_SCORE + (0.0 if source is None else gains[source][TARGETS.index(target.name)] / 100)
        store.put_result(spec, FinetuneResult(
            key=spec.key(), task_name=target.name, base_name=candidate.checkpoint.name, seed=seed,
            protocol=bench.protocol.name, metric="accuracy", score=score, metrics={"accuracy": score}, n_train=48,
            n_test=48, epochs_run=1, train_seconds=1.0, eval_seconds=0.1, train_examples_per_s=48.0,
            eval_examples_per_s=480.0, eval_precision="fp32", versions={}, created_at="2025-01-01T00:00:00"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_bert, shared_data):
    folder = tmp_path_factory.mktemp("ranker")
    store = Store(folder / "upcycle.db")
    experts = tuple(zoo_add(store, str(save_tiny_bert(folder / f"tiny-{source}", seed=i + 1)), name=f"tiny-{source}",
                            source_task=source, base=str(tiny_bert)) for i, source in enumerate(SOURCES))
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "ranker", "targets": [str(shared_data / t) for t in TARGETS]}))
    bench = plan_bench(store, base=str(tiny_bert), suite=str(suite), seeds=1, overrides=FAST)
    plant(store, bench, GAINS)
    yield store, bench, experts
    store.close()


def context_for(store: Store, experts, shared_data, target: str = "poem_sentiment", **changes) -> SelectionContext:
    return SelectionContext(store=store, target=load_task(shared_data / target), candidates=experts,
                            sample=Sample(n=32), excluded_tasks=overlapping(target), **changes)


def test_the_ranker_learns_from_the_other_targets_and_predicts_gains_with_intervals(planted, shared_data,
                                                                                    monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    monkeypatch.setenv("UPCYCLE_DATA_DIR", str(shared_data))  # the experts' source tasks, by name (SEmb)
    store, _, experts = planted
    context = context_for(store, experts, shared_data)
    result = estimate("ranker", context)
    assert result.used == "ranker", result.notes
    helps, neutral, hurts = (result.scores[e.fingerprint] for e in experts)
    assert helps > neutral > hurts and helps > 0 > hurts
    [trained] = [note for note in result.notes if note.startswith("ranker: trained on")]
    assert "9 (candidate, target) pairs of 3 stored targets (cb, stsb, wnli;" in trained and "alpha" in trained
    assert result.amortized_seconds > 0  # the training targets' features
    intervals = ranker_gain_intervals(context, result.scores)
    for expert in experts:
        low, high = intervals[expert.fingerprint]
        assert low <= result.scores[expert.fingerprint] <= high
    # select prints the predicted gain and its interval from the ranker, not from a fallback
    (chosen,) = select(store, shared_data / "poem_sentiment", estimator="ranker", examples=32)
    assert chosen.estimate.used == "ranker" and chosen.top.fingerprint == experts[0].fingerprint
    assert chosen.predicted_gain is not None and chosen.predicted_gain.interval is not None
    assert chosen.predicted_gain.gain == pytest.approx(helps)


def test_the_ranker_never_reads_the_targets_own_column(planted, shared_data, monkeypatch):
    """Plant the opposite order on the target itself: the scores do not move. And each training target's prior
    feature is computed without that target's column."""
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    monkeypatch.setenv("UPCYCLE_DATA_DIR", str(shared_data))
    store, bench, experts = planted
    seen = []
    original = ranker_module.feature_frame

    def spy(context, names):
        seen.append((context.target.name, context.excluded_tasks, tuple(stored_gains(context).columns)))
        return original(context, names)

    monkeypatch.setattr(ranker_module, "feature_frame", spy)
    before = estimate("ranker", context_for(store, experts, shared_data)).scores
    reversed_on_target = {source: (-10 * values[0], *values[1:]) for source, values in GAINS.items()}
    plant(store, bench, reversed_on_target)
    try:
        after = estimate("ranker", context_for(store, experts, shared_data)).scores
    finally:
        plant(store, bench, GAINS)
    assert after == before
    for target, excluded, columns in seen:
        assert "poem_sentiment" in excluded and "poem_sentiment" not in columns
        assert target in excluded and target not in columns, (target, columns)
    assert {target for target, _, _ in seen} == set(TARGETS)


def test_too_little_to_train_on_falls_back_to_the_prior_then_to_a_target_only_estimator(planted, shared_data,
                                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    monkeypatch.setenv("UPCYCLE_DATA_DIR", str(shared_data))
    store, _, experts = planted
    # two stored targets once the target and one more are left out: not enough
    context = context_for(store, experts, shared_data)
    fewer = replace(context, excluded_tasks=context.excluded_tasks | {"wnli"})
    assert [ref.name for ref, _ in training_targets(fewer)] == ["cb", "stsb"]
    result = estimate("ranker", fewer)
    assert result.used == "prior"
    assert result.notes[0] == ("ranker cannot score poem_sentiment (too little to train on (2 stored targets with >= 3 "
                               "measured candidates once the target and tasks sharing its data are left out; it "
                               "needs 3)); falling back to prior.")
    gains = stored_gains(fewer)
    assert all(result.scores[f] == pytest.approx(gains.loc[f].mean()) for f in gains.index)
    # no bench at all (and no gains file that knows these experts): the prior cannot score either, SEmb can
    empty = Store(tmp_path / "empty.db")
    try:
        bare = tuple(zoo_add(empty, e.path, name=e.name, source_task=e.source_task) for e in experts)
        result = estimate("ranker", replace(context, store=empty, candidates=bare))  # features: the same cache
    finally:
        empty.close()
    assert result.used == "semb" and len(result.notes) >= 2
    assert result.notes[0].startswith("ranker cannot score poem_sentiment (too little to train on (0 stored targets")
    assert (result.notes[1].startswith("prior cannot score poem_sentiment (")
            and "falling back to semb" in result.notes[1])
    assert all(np.isfinite(v) for v in result.scores.values())
