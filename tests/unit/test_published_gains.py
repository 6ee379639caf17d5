"""Portable gains: the file format, screening of published tables (synthetic and the real roberta-base one),
matching zoo entries to imported candidates, the prior on imported and shipped gains, and the LOTO evaluation."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from upcycle.errors import ConfigError
from upcycle.ranking.gainsfile import (
    FORMAT,
    VERSION,
    BaseInfo,
    CandidateGains,
    GainSet,
    GainsFile,
    entry_hub_id,
    import_gains,
    match_candidate,
    parse_gains,
    shipped_gains,
)
from upcycle.ranking.loto import bootstrap_mean, loto_predictions, loto_prior, loto_quality
from upcycle.ranking.published import PUBLISHED_TARGETS, import_published, screen_table
from upcycle.selection.context import CostMeter, SelectionContext
from upcycle.selection.estimate import estimate
from upcycle.store import Store, ZooEntry
from upcycle.tasks import load_task, overlapping

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT.parent / "shared" / "external" / "model-recycling"
MINILM_ARCH = "bert-L6-H384-V30522"
MINILM = "dddbed9b2da0f50ead702201235307c796393f98b63a032ed3106bc9a9e9cba9"
ROBERTA_ARCH = "roberta-L12-H768-V50265"


# ---------------------------------------------------------------- screening, on synthetic tables

def synthetic(rows: dict[str, list]) -> tuple[pd.DataFrame, pd.Series]:
    """A table over 12 targets whose difficulty differs a lot (as real targets do), and the base's profile."""
    targets = [f"t{i}" for i in range(12)]
    base = pd.Series([50, 90, 60, 75, 95, 40, 85, 55, 70, 65, 80, 45], index=targets, dtype=float)
    table = pd.DataFrame([[name, *values] for name, values in rows.items()], columns=["model_name", *targets])
    table.index = range(len(table))
    table["model_name"] = [name.split("#")[0] for name in rows]  # "#n" lets a name repeat in the dict
    return table, base


def test_screening_catches_a_shift_a_duplicate_and_impossible_values_and_keeps_partial_rows():
    base = [50, 90, 60, 75, 95, 40, 85, 55, 70, 65, 80, 45]
    good = [b + 1.5 for b in base]
    shifted = good[1:] + good[:1]  # every score filed under the next target: the published corruption
    table, profile = synthetic({
        "base-model": base,
        "org/good": good,
        "org/shifted": shifted,
        "org/copy": list(good),  # the same scores as org/good under another name
        "org/good#2": [b + 3 for b in base],  # the same name again
        "org/partial": good[:11] + [None],  # 11 of 12 reported: tested, sound, kept as partial
        "org/few": good[:4] + [None] * 8,  # too few to test the profile: kept as partial
        "org/empty": [None] * 12,
        "org/too-high": good[:11] + [150.0],
        "org/text": good[:11] + ["n/a"],
    })
    screened = screen_table(table, profile, base_name="base-model", min_targets=10)
    reasons = {e.name: e.reason for e in screened.excluded}
    assert reasons == {"base-model": "base", "org/shifted": "score profile", "org/copy": "duplicate scores",
                       "org/good": "duplicate name", "org/empty": "no target scores",
                       "org/too-high": "impossible value", "org/text": "impossible value"}
    details = {(e.name, e.row): e.detail for e in screened.excluded}
    assert "as row 1 (org/good)" in details[("org/copy", 3)] and "row 1" in details[("org/good", 4)]
    assert "t11='n/a'" in details[("org/text", 9)] and "150" in details[("org/too-high", 8)]
    assert re.search(r"correlate -?0\.\d+ .* over 12 targets", details[("org/shifted", 2)])
    assert list(screened.scores["model_name"]) == ["org/good", "org/partial", "org/few"]
    assert screened.partial.tolist() == [False, True, True]
    assert screened.correlations[1] == pytest.approx(1.0) and math.isnan(screened.correlations[6])
    assert screened.full_rows == 4 and screened.full_low_profile == 1  # good, shifted, copy, good#2
    assert screened.counts["impossible value"] == 2 and sum(screened.counts.values()) == 7


def test_a_constant_row_fails_the_profile_test_and_the_threshold_is_a_parameter():
    base = [50, 90, 60, 75, 95, 40, 85, 55, 70, 65, 80, 45]
    noisy = [b + (8 if i % 2 else -8) for i, b in enumerate(base)]  # r about 0.87 with the base
    table, profile = synthetic({"org/flat": [70.0] * 12, "org/noisy": noisy})
    strict = screen_table(table, profile, base_name="b")
    assert [e.reason for e in strict.excluded] == ["score profile", "score profile"]
    assert "the same score on all 12" in strict.excluded[0].detail
    lenient = screen_table(table, profile, base_name="b", min_correlation=0.8)
    assert [e.name for e in lenient.excluded] == ["org/flat"]


# ---------------------------------------------------------------- the real published roberta-base table

@pytest.fixture(scope="module")
def roberta():
    return import_published(PUBLISHED / "roberta-base_table.csv",
                            PUBLISHED / "models_results_roberta_base_pretrain.csv")


def test_the_real_roberta_table_screens_as_published_385_full_rows_67_with_a_broken_profile(roberta):
    document, screened = roberta
    assert screened.full_rows == 385 and screened.full_low_profile == 67
    assert screened.counts == {"impossible value": 0, "no target scores": 891, "base": 2, "duplicate name": 0,
                               "duplicate scores": 1, "score profile": 67}
    [gain_set] = document.sets
    assert len(gain_set.candidates) == 317 and not any(c.partial for c in gain_set.candidates)
    assert gain_set.arch == ROBERTA_ARCH and gain_set.base.runs == 20 and len(gain_set.targets) == 36
    assert set(gain_set.targets) == set(PUBLISHED_TARGETS.values())
    assert {"tweet_eval_irony", "sst5"} <= set(gain_set.targets) and "tweet_ev_irony" not in gain_set.targets
    # the base score is the mean of the 20 pretrain runs, which is what the table's own base row says
    table = pd.read_csv(PUBLISHED / "roberta-base_table.csv", index_col=0)
    assert gain_set.base.scores["cb"] == pytest.approx(table.loc[0, "cb"], abs=1e-3)
    first = gain_set.candidates[0]
    assert first.name == first.hub_id == "ibm/ColD-Fusion-itr13-seed2"
    assert first.gains["cb"] == pytest.approx(table.loc[1, "cb"] - table.loc[0, "cb"], abs=1e-3)
    duplicate = next(e for e in gain_set.excluded if e.reason == "duplicate scores")
    assert duplicate.name == "icelab/spaceroberta" and "seanmemery/SpaceSafetyRoberta" in duplicate.detail
    # the document is a valid gains file, and survives a round trip through JSON
    assert parse_gains(document.to_json()) == document


def test_loto_on_the_clean_roberta_rows_reproduces_the_issue_figures(roberta):
    document, _ = roberta
    [gain_set] = document.sets
    gains = gain_set.frame()
    scores = gains + pd.Series(gain_set.base.scores)[gains.columns]
    prior, chance = loto_quality(scores, loto_prior(gains)), loto_quality(scores, None)
    assert len(prior) == 36 and (prior["candidates"] == 317).all()
    assert prior["regret_at_1"].mean() == pytest.approx(3.50, abs=0.005)
    assert prior["regret_at_3"].mean() == pytest.approx(2.47, abs=0.005)
    assert chance["regret_at_1"].mean() == pytest.approx(5.72, abs=0.006)
    assert chance["regret_at_3"].mean() == pytest.approx(3.94, abs=0.005)


# ---------------------------------------------------------------- LOTO, pure

def test_loto_prior_is_the_mean_gain_over_the_other_targets():
    gains = pd.DataFrame({"a": [1.0, 4.0, np.nan], "b": [3.0, np.nan, 2.0], "c": [5.0, 0.0, np.nan]},
                         index=["x", "y", "z"])
    predicted = loto_prior(gains)
    assert predicted.loc["x", "a"] == 4.0 and predicted.loc["x", "c"] == 2.0
    assert predicted.loc["y", "a"] == 0.0 and predicted.loc["y", "b"] == 2.0
    assert predicted.loc["z", "b"] != predicted.loc["z", "b"]  # z has nothing but b: NaN
    assert predicted.loc["z", "a"] == 2.0
    same = loto_predictions(gains, lambda seen, target: seen.mean(axis=1))
    pd.testing.assert_frame_equal(same, predicted)
    # a perfect predictor has zero regret; random order is the exact expectation
    scores = pd.DataFrame({"a": [60.0, 80.0, 70.0]}, index=["x", "y", "z"])
    assert loto_quality(scores, scores)["regret_at_1"].item() == 0.0
    expected = np.mean([(80 - s) / 80 * 100 for s in (60, 80, 70)])
    assert loto_quality(scores, None)["regret_at_1"].item() == pytest.approx(expected)
    mean, low, high = bootstrap_mean(np.array([1.0, 2.0, 3.0, np.nan]))
    assert mean == 2.0 and 1.0 <= low <= mean <= high <= 3.0


# ---------------------------------------------------------------- the file format: one-line errors

def document(**changes) -> dict:
    base = {"format": FORMAT, "version": VERSION, "source": "test", "license": "CC0", "sets": [{
        "arch": MINILM_ARCH, "base": {"name": "minilm", "fingerprint": MINILM, "runs": 2, "scores": {"cb": 56.0}},
        "targets": ["cb", "wnli"],
        "candidates": [{"name": "minilm-sst2", "runs": 2, "gains": {"cb": 11.6, "wnli": 14.1}}]}]}
    for path, value in changes.items():
        node = base
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    return base


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "csv"}, "not an upcycle gains file"),
    ({"version": 2}, "gains file version 2; this upcycle reads version 1"),
    ({"sets.0.candidates.0.gains": {"cb": 1.0, "rte": 2.0}}, "gains on targets not listed in 'targets': rte"),
    ({"sets.0.candidates.0.runs": 0}, "sets.0.candidates.0.runs: Input should be greater than or equal to 1"),
    ({"sets.0.base.fingerprint": "abc"}, "sets.0.base.fingerprint: Value error, a fingerprint is 64"),
    ({"sets.0.candidates.0.gains": {"cb": float("nan")}}, "gains must be finite numbers; not at cb"),
    ({"sets.0.candidates.0.extra": 1}, "sets.0.candidates.0.extra: Extra inputs are not permitted"),
    ({"sets": []}, "sets: List should have at least 1 item"),
])
def test_a_malformed_gains_file_is_one_line_naming_the_problem(changes, message):
    with pytest.raises(ConfigError) as caught:
        parse_gains(json.dumps(document(**changes)), "mine.json")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("mine.json: ") and message in text, text


def test_not_json_is_one_line_too():
    with pytest.raises(ConfigError, match=r"^x\.json: not JSON \(.*\); a gains file is written by"):
        parse_gains("{nope", "x.json")


# ---------------------------------------------------------------- matching zoo entries to imported candidates

def entry(name: str, *, fingerprint: str = "e" * 64, arch: str = MINILM_ARCH, base: str | None = MINILM,
          path: str = "/zoo/x", source_task: str | None = None) -> ZooEntry:
    return ZooEntry(fingerprint=fingerprint, name=name, path=path, arch=arch, model_type=arch.split("-")[0],
                    source_task=source_task, base_fingerprint=base, added_at="now")


def published_set() -> GainSet:
    return GainSet(arch=ROBERTA_ARCH, targets=["cb", "tweet_eval_irony", "rte"],
                   base=BaseInfo(name="roberta-base", hub_id="FacebookAI/roberta-base", runs=20),
                   candidates=[CandidateGains(name="ibm/ColD-Fusion", hub_id="ibm/ColD-Fusion", runs=1,
                                              gains={"cb": 20.0, "tweet_eval_irony": 6.0, "rte": 10.0}),
                               CandidateGains(name="local-name", runs=1, gains={"cb": 1.0})])


def test_matching_by_fingerprint_hub_id_or_name_with_the_same_base_and_never_across_architectures():
    [shipped] = shipped_gains()[0].sets
    assert match_candidate(entry("minilm-sst2"), shipped)[1] == f"name, same base {MINILM[:8]}"
    assert match_candidate(entry("minilm-sst2", arch="bert-L2-H32-V30522"), shipped) is None  # other arch
    assert match_candidate(entry("minilm-sst2", base=None), shipped) is None  # lineage unknown: a name is not enough
    assert match_candidate(entry("minilm-sst2", base="f" * 64), shipped) is None  # another base
    committed = next(c for c in shipped.candidates if c.name == "minilm-imdb")
    renamed = entry("my-imdb", fingerprint=committed.fingerprint, arch="whatever", base=None)
    assert match_candidate(renamed, shipped) == (committed, "fingerprint")  # the same weights, whatever the name
    assert match_candidate(entry("minilm", fingerprint=MINILM, base=None), shipped) is None  # the base itself

    published = published_set()
    cached = entry("cold", arch=ROBERTA_ARCH, base=None,
                   path="/home/u/.cache/huggingface/hub/models--ibm--ColD-Fusion/snapshots/0123abc")
    assert entry_hub_id(cached) == "ibm/ColD-Fusion"
    assert match_candidate(cached, published)[1] == "hub id"
    assert match_candidate(entry("IBM/cold-fusion", arch=ROBERTA_ARCH, base=None), published)[1] == "hub id"
    assert match_candidate(entry("ibm/ColD-Fusion", base=None), published) is None  # a MiniLM of that name
    assert match_candidate(entry("local-name", arch=ROBERTA_ARCH, base=None), published) is None


# ---------------------------------------------------------------- the prior on imported and shipped gains

@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "fresh.db") as opened:
        yield opened


def prior(store: Store, candidates: list[ZooEntry], target: str):
    task = load_task(ROOT.parent / "shared" / "datasets" / target)
    context = SelectionContext(store=store, target=task, candidates=tuple(candidates),
                               excluded_tasks=overlapping(task.name), meter=CostMeter(device="cpu"))
    return estimate("prior", context, device="cpu")


def test_a_fresh_store_ranks_the_demo_experts_by_the_shipped_committed_gains(store):
    experts = [entry(f"minilm-{task}", fingerprint=f"{i}" * 64, source_task=task)
               for i, task in enumerate(["sst2", "ag_news", "mrpc", "dair_emotion"], start=1)]
    stranger = entry("minilm-sst2", fingerprint="9" * 64, arch="bert-L2-H32-V30522")  # another architecture
    result = prior(store, [*experts, stranger], "poem_sentiment")
    assert result.used == "prior"
    gains = shipped_gains()[0].sets[0].frame().drop(columns="poem_sentiment")
    for expert in experts:
        assert result.scores[expert.fingerprint] == pytest.approx(gains.loc[expert.name].mean())
    assert math.isnan(result.scores[stranger.fingerprint])
    ranked = sorted(experts, key=lambda e: -result.scores[e.fingerprint])
    assert ranked[0].name == "minilm-sst2"  # the committed leaderboard's first, poem_sentiment left out
    [served, unknown] = result.notes
    assert served.startswith("prior: gains of minilm-sst2 (7 targets), minilm-ag_news (9 targets)")
    assert "from the gains shipped with upcycle (minilm_recycling_gains.json)" in served
    assert f"matched by name, same base {MINILM[:8]}" in served and "not on these weights" in served
    assert unknown == "prior: no gains known for minilm-sst2; the prior ranks them last."
    # the target and the tasks sharing its data stay out: sst2's expert keeps 7 of 10 targets for rotten_tomatoes
    sst2 = prior(store, experts[:1], "rotten_tomatoes").scores[experts[0].fingerprint]
    assert sst2 == pytest.approx(shipped_gains()[0].sets[0].frame().loc["minilm-sst2"].drop(
        ["rotten_tomatoes", "sst5"]).mean())


def test_imported_gains_come_before_the_shipped_ones_and_keep_the_target_out(store):
    mine = GainsFile.model_validate(document(**{"sets.0.candidates.0.gains": {"cb": 10.0, "wnli": 20.0}}))
    summary = import_gains(store, mine)
    assert summary.sets == [("minilm (bert-L6-H384-V30522)", 1, 2)] and summary.replaced == 0
    sst2 = entry("minilm-sst2")
    assert prior(store, [sst2], "poem_sentiment").scores[sst2.fingerprint] == pytest.approx(15.0)
    assert prior(store, [sst2], "cb").scores[sst2.fingerprint] == pytest.approx(20.0)  # cb left out
    again = GainsFile.model_validate(document(**{"sets.0.candidates.0.gains": {"cb": 2.0}}))
    assert import_gains(store, again).replaced == 1  # the same source: replaced, not added
    assert prior(store, [sst2], "poem_sentiment").scores[sst2.fingerprint] == pytest.approx(2.0)
    # where the import has nothing outside the excluded tasks, the next source (the shipped file) serves
    shipped = shipped_gains()[0].sets[0].frame().loc["minilm-sst2"].drop("cb")
    assert prior(store, [sst2], "cb").scores[sst2.fingerprint] == pytest.approx(shipped.mean())
    # a published set matched by hub id, the held-out target (tweet_eval_irony, published tweet_ev_irony) left out
    published = GainsFile(format=FORMAT, version=VERSION, source="published", license="Apache-2.0",
                          sets=[published_set()])
    import_gains(store, published)
    cold = entry("ibm/ColD-Fusion", arch=ROBERTA_ARCH, base=None)
    result = prior(store, [cold, entry("other", fingerprint="7" * 64, arch=ROBERTA_ARCH, base=None)],
                   "tweet_eval_irony")
    assert result.scores[cold.fingerprint] == pytest.approx(15.0)
    assert ("from the imported gains of published [FacebookAI/roberta-base (roberta-L12-H768-V50265)], matched by "
            "hub id") in result.notes[0]


def test_the_gain_model_predicts_the_gains_of_a_ranking_estimator_with_prediction_intervals(store):
    from upcycle.selection import advice
    from upcycle.selection.advice import forecast_gains
    from upcycle.selection.metrics import prediction_interval

    experts = [entry(f"minilm-{task}", fingerprint=f"{i}" * 64, source_task=task)
               for i, task in enumerate(["sst2", "dair_emotion"], start=1)]
    task = load_task(ROOT.parent / "shared" / "datasets" / "poem_sentiment")
    context = SelectionContext(store=store, target=task, candidates=tuple(experts),
                               excluded_tasks=overlapping(task.name), meter=CostMeter(device="cpu"))
    gains = advice.gain_model_estimate(context)
    assert gains is not None and gains.used == "prior"
    forecasts = forecast_gains(gains, context)
    shipped = shipped_gains()[0].sets[0].frame().drop(columns="poem_sentiment")
    for expert in experts:
        row = shipped.loc[expert.name].dropna().to_numpy()
        assert forecasts[expert.fingerprint].gain == pytest.approx(row.mean())
        assert forecasts[expert.fingerprint].interval == pytest.approx(prediction_interval(row))
    # a candidate no gains file knows: no estimate at all (no fallback to an estimator that predicts no gain)
    lonely = replace(context, candidates=(entry("lonely", arch="bert-L2-H32-V30522", base=None),))
    assert advice.gain_model_estimate(lonely) is None


def test_with_no_gains_anywhere_the_prior_falls_back(store):
    lonely = entry("lonely", arch="bert-L2-H32-V30522", base=None)
    result = prior(store, [lonely], "poem_sentiment")
    assert result.used == "semb" or result.used != "prior"
    assert "leaderboard import" in result.notes[0]


# ---------------------------------------------------------------- the shipped file is the committed grid

def test_the_shipped_gains_are_the_committed_leaderboard_and_up_to_date(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # minilm_gains imports committed_grid beside it
    spec = importlib.util.spec_from_file_location("minilm_gains", ROOT / "benchmarks" / "minilm_gains.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.build().to_json() == builder.OUT.read_text()  # regenerate: benchmarks/minilm_gains.py
    [gain_set] = shipped_gains()[0].sets
    assert gain_set.base.fingerprint == MINILM and gain_set.arch == MINILM_ARCH and gain_set.base.runs == 2
    board = (ROOT / "benchmarks" / "results" / f"{builder.PREFIX}_leaderboard.md").read_text()
    averages = dict(re.findall(r"^\| \d+ \| (minilm-\S+) \| \S+ \| ([+-][\d.]+) \|", board, re.M))
    assert len(averages) == len(gain_set.candidates) == 12
    means = gain_set.frame().mean(axis=1)
    for name, value in averages.items():
        assert round(means[name], 2) == pytest.approx(float(value), abs=0.006), name
    sst2 = next(c for c in gain_set.candidates if c.name == "minilm-sst2")
    assert sst2.source_task == "sst2" and not sst2.partial and set(sst2.gains) == set(gain_set.targets) - {
        "rotten_tomatoes", "sst5"}  # overlaps are absent, not missing
