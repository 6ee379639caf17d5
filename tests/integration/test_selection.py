"""Selection end to end on a tiny BERT zoo and real shared tasks: select, verify, evaluate, bad input."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import save_tiny_bert, sentiment_rows, write_rows
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from upcycle.cli import app
from upcycle.errors import ConfigError, UpcycleError
from upcycle.ranking import grid_frame, plan_bench, run_bench
from upcycle.report.selection import results_json, results_markdown
from upcycle.selection import evaluate_selection, select
from upcycle.selection.context import CostMeter, FeatureCache, Sample, SelectionContext
from upcycle.selection.estimate import estimate
from upcycle.selection.estimators import ESTIMATORS
from upcycle.selection.estimators.prior import stored_gains
from upcycle.selection.evaluation import RANDOM, summarize_selection
from upcycle.store import Store
from upcycle.tasks import load_task, overlapping
from upcycle.zoo import build_zoo, finetune, zoo_add

FAST = {"max_train": 48, "max_eval": 48, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}
SOURCES = ("sst2", "trec_coarse", "financial_phrasebank")
TARGETS = ("rotten_tomatoes", "stsb", "poem_sentiment")
runner = CliRunner()


@pytest.fixture(scope="module")
def graded(tmp_path_factory, tiny_bert, shared_data):
    """Three tiny experts and a stored 1-seed grid on three targets (one overlapping an expert, one regression)."""
    folder = tmp_path_factory.mktemp("selection")
    store = Store(folder / "upcycle.db")
    list(build_zoo(store, base=str(tiny_bert), sources=[str(shared_data / s) for s in SOURCES],
                   out=folder / "experts", overrides=FAST))
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "sel", "targets": [str(shared_data / t) for t in TARGETS]}))
    bench = plan_bench(store, base=str(tiny_bert), suite=str(suite), seeds=1, overrides=FAST)
    list(run_bench(bench, store))
    yield store, bench, folder
    store.close()


def test_every_estimator_scores_every_candidate_and_reports_its_cost(graded, shared_data, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    store, bench, _ = graded
    candidates = tuple(store.get_checkpoint(c.checkpoint.fingerprint) for c in bench.candidates)
    target = load_task(shared_data / "poem_sentiment")
    context = SelectionContext(store=store, target=target, candidates=candidates, sample=Sample(n=64),
                               excluded_tasks=overlapping("poem_sentiment"))
    for name in ESTIMATORS.names():
        result = estimate(name, context)
        # the ranker needs 3 other stored targets of 3 measured candidates; this grid has 1, so it falls back
        # (trained and judged in test_ranker_estimator.py)
        assert result.used == ("prior" if name == "ranker" else name), (name, result.notes)
        assert set(result.scores) == {c.fingerprint for c in candidates}
        assert all(np.isfinite(v) for v in result.scores.values()), name
        assert result.seconds >= 0 and result.cpu_seconds == result.seconds and result.device == "cpu"
    features = store.get_features(candidates[0].fingerprint, target.fingerprint, Sample(n=64).key)
    assert features is not None and features[0].shape == (64, 32) and features[1] > 0  # cached with its cost
    # a cached feature is charged what it cost, so the reported cost does not depend on the cache
    fused = estimate("logme+retrieval", context)
    assert fused.used == "logme+retrieval" and set(fused.scores) == {c.fingerprint for c in candidates}
    with pytest.raises(UpcycleError, match="Unknown estimator 'logme\\+oracle'"):
        estimate("logme+oracle", context)
    # cold and warm, a feature costs what it cost when it was computed (from the store, or from memory)
    sample = Sample(n=64, seed=11)
    cold_meter, warm_meter, stored_meter = CostMeter(), CostMeter(), CostMeter()
    cold = FeatureCache(store).pooled(candidates[0], context.target_source, sample, cold_meter)
    warm = FeatureCache(store).pooled(candidates[0], context.target_source, sample, warm_meter)
    cache = FeatureCache(store)
    cache.pooled(candidates[0], context.target_source, sample, CostMeter())
    again = cache.pooled(candidates[0], context.target_source, sample, stored_meter)
    assert np.array_equal(cold, warm) and np.array_equal(cold, again)
    assert cold_meter.total > 0 and cold_meter.total == warm_meter.total == stored_meter.total
    # bought on the CPU, a cached feature costs the same read by a run on an accelerator (nothing is recomputed)
    elsewhere = CostMeter(device="cuda:0")
    FeatureCache(store).pooled(candidates[0], context.target_source, sample, elsewhere)
    assert elsewhere.total == cold_meter.total


def test_prior_never_sees_the_target_or_tasks_sharing_its_data(graded, shared_data):
    store, bench, _ = graded
    candidates = tuple(store.get_checkpoint(c.checkpoint.fingerprint) for c in bench.candidates)
    target = load_task(shared_data / "rotten_tomatoes")
    context = SelectionContext(store=store, target=target, candidates=candidates,
                               excluded_tasks=overlapping("rotten_tomatoes"))
    assert overlapping("rotten_tomatoes") == {"rotten_tomatoes", "sst2", "sst5"}
    gains = stored_gains(context)
    assert "rotten_tomatoes" not in gains.columns and set(gains.columns) == {"stsb", "poem_sentiment"}
    everything = stored_gains(SelectionContext(store=store, target=target, candidates=candidates))
    assert "rotten_tomatoes" in everything.columns
    prior = estimate("prior", context).scores
    expected = gains.mean(axis=1)
    assert all(prior[f] == pytest.approx(expected[f]) for f in expected.index)


def test_evaluate_selection_leave_one_target_out(graded, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    store, bench, _ = graded
    names = ["prior", "logme", "semb", "combined", "size"]
    frame = evaluate_selection(store, bench, names, examples=64)
    assert set(frame["estimator"]) == {*names, RANDOM}
    assert set(frame["target"]) == set(TARGETS)
    # the expert trained on sst2 is never a candidate for rotten_tomatoes (shared sentences)
    assert (frame.loc[frame["target"] == "rotten_tomatoes", "candidates"] == 2).all()
    assert (frame.loc[frame["target"] != "rotten_tomatoes", "candidates"] == 3).all()
    # Regret is undefined (NaN) exactly where the best true score is <= 0, and 0 at k=5 (every list is shorter)
    grid = grid_frame(bench, store)
    truth = grid[~grid["is_base"]].groupby(["target", "fingerprint"])["score"].mean()
    for target, rows in frame.groupby("target"):
        best = truth[target].max()
        assert rows["regret_at_1"].isna().all() == (best <= 0), target
        if best > 0:
            assert rows["regret_at_5"].eq(0).all()
            # random order, by hand: the mean over the candidates of (M - s) / M x 100
            expected = ((best - truth[target]) / best * 100).mean()
            assert rows.loc[rows["estimator"] == RANDOM, "regret_at_1"].item() == pytest.approx(expected)
    assert frame["ndcg"].between(0, 1).all() and frame["cost_fraction"].ge(0).all()
    # the device the costs were measured on: on the estimators' rows, not on the reference rows
    assert frame.loc[frame["estimator"] == RANDOM, "device"].isna().all()
    assert (frame.loc[frame["estimator"].isin(names), "device"] == "cpu").all()
    summary = summarize_selection(frame)
    assert summary["logme"]["device"] == "cpu" and summary[RANDOM]["device"] is None
    document = json.loads(results_json(frame, summary, "combined"))
    assert document["default"] == "combined" and document["candidates"] == 3 and document["targets"] == 3
    assert document["device"] == "cpu" and "cpu_seconds_per_target" in document["estimators"]["logme"]
    assert set(document["estimators"]["logme"]) >= {"regret_at_1", "regret_at_3", "regret_at_5", "ndcg",
                                                    "spearman", "cost_fraction"}
    assert "random (expected)" in document["estimators"]
    assert "| **combined** (default)" in results_markdown(frame, summary, "combined", bench)
    # the switch-or-stay advice, judged on each held-out target against the top pick's measured gain, by hand
    base = grid[grid["is_base"]].groupby("target")["score"].mean()
    for row in frame[frame["estimator"].isin(names)].itertuples():
        assert row.advice in {"switch", "stay", "uncertain", "ranking only"}, row
        measured = 100 * (truth[row.target] - base[row.target])
        assert row.top_gain in set(measured.round(9)) or any(abs(row.top_gain - m) < 1e-9 for m in measured)
        if row.advice == "switch":
            assert row.advice_right == (row.top_gain > 0)
        elif row.advice == "stay":
            assert row.advice_right == (row.top_gain <= 0)
        else:
            assert row.advice_right is None or np.isnan(row.advice_right)
    prior = frame[frame["estimator"] == "prior"]  # its top pick is the highest predicted gain: predicted_top_gain
    assert prior["predicted_top_gain"].notna().all()  # is the pick's own forecast, never another candidate's
    logme = frame[frame["estimator"] == "logme"]  # LogME predicts no gain: the prior's forecasts judge its pick
    assert set(logme["advice"]) <= {"switch", "stay", "uncertain"}
    advice = summary["prior"]["advice"]
    assert advice["targets"] == 3 and advice["switch"] + advice["stay"] + advice["uncertain"] == 3
    assert advice["decided"] == advice["switch"] + advice["stay"] and 0 <= advice["right"] <= advice["decided"]
    assert advice["gains_from"] == "prior" and summary["logme"]["advice"]["gains_from"] == "prior"
    assert document["estimators"]["prior"]["advice"]["targets"] == 3 and "advice" not in document["estimators"][
        RANDOM]
    assert "## Should I switch? The advice, judged" in results_markdown(frame, summary, "combined", bench)


def test_select_cli_on_a_users_csv_with_verification(graded, tmp_path, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    store, bench, folder = graded
    data = write_rows(tmp_path / "reviews.csv", sentiment_rows(120, seed=5))
    args = ["select", str(data), "--text-column", "review", "--label-column", "sentiment", "--examples", "64",
            "--db", str(store.path)]
    ranked = runner.invoke(app, [*args, "--estimator", "logme"])
    assert ranked.exit_code == 0, ranked.output
    assert "starting points for reviews" in ranked.output
    assert re.search(r"cost: \d+\.\d s of CPU time for this target", ranked.output), ranked.output
    verified = runner.invoke(app, [*args, "--estimator", "logme", "--verify-top", "1", "--format", "json",
                                   "--protocol", "quick", *[f"--set={k}={v}" for k, v in FAST.items()]])
    assert verified.exit_code == 0, verified.output
    (answer,) = json.loads(verified.stdout)
    assert answer["cost_device"] == "cpu" and answer["cpu_seconds"] > 0
    assert len(answer["ranking"]) == 3 and [r["rank"] for r in answer["ranking"]] == [1, 2, 3]
    assert [v["is_base"] for v in answer["verified"]] == [False, True]
    assert answer["verified"][0]["candidate"] == answer["ranking"][0]["candidate"]
    best = max(answer["verified"], key=lambda v: v["score"])
    assert answer["measured_best"] == best["candidate"] and best["score"] >= answer["verified"][1]["score"]
    listed = runner.invoke(app, ["estimators"])
    assert listed.exit_code == 0 and "logme" in listed.output and "default: logme+prior" in listed.output


def test_a_tiny_target_falls_back_with_a_warning_and_a_budget_is_enforced(graded, tmp_path, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    store, _, _ = graded
    tiny = write_rows(tmp_path / "tiny.csv", sentiment_rows(40, seed=6)[:8] + sentiment_rows(40, seed=7)[:1])
    (selection,) = select(store, tiny, estimator="logme", text_column="review", label_column="sentiment")
    assert selection.estimate.used == "semb"
    assert any("logme cannot score" in note and "falling back to semb" in note for note in selection.estimate.notes)
    cli = runner.invoke(app, ["select", str(tiny), "--estimator", "logme", "--text-column", "review",
                              "--label-column", "sentiment", "--db", str(store.path)])
    assert cli.exit_code == 0 and "warning" in cli.output and "falling back" in cli.output
    data = write_rows(tmp_path / "reviews.csv", sentiment_rows(200, seed=8))
    (cheap,) = select(store, data, estimator="fewshot", budget=0.05, text_column="review", label_column="sentiment")
    assert cheap.estimate.used != "fewshot" and cheap.estimate.device == "cpu"
    assert any("fewshot cannot score" in note and "of a 0.05-second budget (CPU time)" in note
               for note in cheap.estimate.notes), cheap.estimate.notes


def test_candidates_of_two_architectures_are_ranked_apart(graded, tmp_path, shared_data):
    store, bench, _ = graded
    other = zoo_add(store, str(save_tiny_bert(tmp_path / "wide", seed=3, hidden_size=48)), name="wide")
    names = [c.checkpoint.name for c in bench.candidates] + ["wide"]
    selections = select(store, shared_data / "poem_sentiment", candidates=names, estimator="logme", examples=32)
    assert len(selections) == 2
    by_arch = {s.arch: [entry.name for entry, _ in s.ranking] for s in selections}
    assert by_arch[other.arch] == ["wide"]
    assert sorted(by_arch[bench.arch]) == sorted(c.checkpoint.name for c in bench.candidates)


def test_bad_input_is_refused_clearly(graded, tmp_path):
    store, _, _ = graded
    empty = Store(tmp_path / "empty.db")
    with pytest.raises(ConfigError, match="No candidates"):
        select(empty, "poem_sentiment")
    empty.close()
    cli = runner.invoke(app, ["select", "poem_sentiment", "--db", str(tmp_path / "empty2.db")])
    assert cli.exit_code == 2 and "No candidates" in cli.output
    one_class = write_rows(tmp_path / "one.csv", [{"text": f"fine film {i}", "label": "pos"} for i in range(30)])
    single = runner.invoke(app, ["select", str(one_class), "--db", str(store.path)])
    assert single.exit_code == 2 and "single class" in single.output
    unknown = runner.invoke(app, ["select", "poem_sentiment", "--estimator", "oracle", "--db", str(store.path)])
    assert unknown.exit_code == 2 and "Unknown estimator" in unknown.output
    wrong_column = runner.invoke(app, ["select", str(one_class), "--label-column", "stars", "--db", str(store.path)])
    assert wrong_column.exit_code == 2 and "stars" in wrong_column.output


def test_a_damaged_cached_feature_is_recomputed_not_served(graded, shared_data):
    store, bench, _ = graded
    entry = store.get_checkpoint(bench.candidates[0].checkpoint.fingerprint)
    target = load_task(shared_data / "poem_sentiment")
    context = SelectionContext(store=store, target=target, candidates=(entry,), sample=Sample(n=16))
    first = context.target_features(entry)
    store._db.execute("UPDATE features SET data = X'00' WHERE task_fingerprint = ?", (target.fingerprint,))
    assert store.get_features(entry.fingerprint, target.fingerprint, Sample(n=16).key) is None
    fresh = SelectionContext(store=store, target=target, candidates=(entry,), sample=Sample(n=16))
    assert np.allclose(fresh.target_features(entry), first, atol=1e-2)
    assert store.get_features(entry.fingerprint, target.fingerprint, Sample(n=16).key) is not None


def corrupt_copy(source, target, tensor: str = "encoder.layer.0.attention.self.query.weight"):
    """A copy of the checkpoint at ``source`` with one NaN in ``tensor``: what a crashed trainer can leave."""
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    name = next(key for key in weights if key.endswith(tensor))
    weights[name][0, 0] = float("nan")
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target, name


def test_a_corrupt_checkpoint_never_enters_the_zoo(graded, tmp_path):
    store, _, folder = graded
    expert = next((folder / "experts").iterdir())
    corrupt, tensor = corrupt_copy(expert, tmp_path / "nanny")
    before = len(store.checkpoints())
    with pytest.raises(UpcycleError, match=rf"tensor '{tensor}' holds 1 NaN or inf value\(s\)"):
        zoo_add(store, str(corrupt), name="nanny")
    added = runner.invoke(app, ["zoo", "add", str(corrupt), "--name", "nanny", "--db", str(store.path)])
    assert added.exit_code == 2 and tensor in added.output and "Traceback" not in added.output
    assert len(store.checkpoints()) == before


def test_one_corrupt_candidate_is_ranked_last_with_a_note_and_the_rest_are_ranked(graded, shared_data, tmp_path):
    """A store from before the screening (or weights corrupted after registration) must not break select."""
    store, _, folder = graded
    expert = next((folder / "experts").iterdir())
    corrupt, _ = corrupt_copy(expert, tmp_path / "nanny", tensor="embeddings.word_embeddings.weight")
    good = [e for e in store.checkpoints() if e.source_task in SOURCES]
    with Store(tmp_path / "old.db") as old:
        for entry in good:  # the registered experts, and the corrupt one written straight into the table
            old.put_checkpoint(fingerprint=entry.fingerprint, name=entry.name, path=entry.path, arch=entry.arch,
                               model_type=entry.model_type, source_task=entry.source_task,
                               base_fingerprint=entry.base_fingerprint, provenance=None)
        old.put_checkpoint(fingerprint="f" * 64, name="nanny", path=str(corrupt), arch=good[0].arch,
                           model_type="bert", source_task="sst2", base_fingerprint=None, provenance=None)
        for estimator in ("logme", "probe"):
            (selection,) = select(old, shared_data / "poem_sentiment", estimator=estimator, examples=48)
            ranked = [entry.name for entry, _ in selection.ranking]
            assert ranked[-1] == "nanny" and np.isnan(selection.ranking[-1][1]), estimator
            assert all(np.isfinite(score) for _, score in selection.ranking[:-1])
            assert any("nanny" in note and "NaN" in note for note in selection.estimate.notes), selection.estimate
    shown = runner.invoke(app, ["select", str(shared_data / "poem_sentiment"), "--examples", "48", "--db",
                                str(tmp_path / "old.db")])
    assert shown.exit_code == 0 and "nanny" in shown.output and "ranked last" in shown.output, shown.output


def test_a_designed_best_candidate_ranks_first(tiny_bert, sentiment_folder, tmp_path):
    """Two untrained BERTs and one trained on the same kind of data as the target: the estimators that read the
    target through each candidate's features must put the trained one first."""
    from conftest import TINY_OVERRIDES

    with Store(tmp_path / "designed.db") as store:
        expert, _ = finetune(str(tiny_bert), str(sentiment_folder), overrides=TINY_OVERRIDES, store=store,
                             save=tmp_path / "sentiment-expert", text_column="review", label_column="sentiment")
        for seed in (5, 6):
            zoo_add(store, str(save_tiny_bert(tmp_path / f"untrained-{seed}", seed=seed)))
        target = write_rows(tmp_path / "target.csv", sentiment_rows(200, seed=9))
        names = ["sentiment-expert", "untrained-5", "untrained-6"]
        for estimator in ("logme", "probe", "knn"):
            (selection,) = select(store, target, candidates=names, estimator=estimator, examples=64,
                                  text_column="review", label_column="sentiment")
            assert selection.ranking[0][0].name == "sentiment-expert", (estimator, selection.ranking)


def test_select_prints_the_device_its_cost_was_measured_on():
    from upcycle.cli.common import console
    from upcycle.cli.selection import _print_selection
    from upcycle.selection import Selection
    from upcycle.selection.estimate import Estimate
    from upcycle.store import ZooEntry

    entry = ZooEntry("fp", "minilm-sst2", "/zoo/minilm-sst2", "bert-6x384", "bert", "sst2", None, "")
    on_gpu = Estimate("logme", "logme", {"fp": 1.0}, seconds=1.23, amortized_seconds=0.4,
                      device="cuda:0 (NVIDIA H200)", notes=())
    selection = Selection("bert-6x384", "reviews", "accuracy", None, ((entry, 1.0),), on_gpu)
    with console.capture() as captured:
        _print_selection(selection)
    printed = " ".join(captured.get().split())
    assert ("cost: 1.2 s on cuda:0 (NVIDIA H200) for this target (+ 0.4 s on source data, once per candidate)"
            in printed), printed
    assert "CPU" not in printed
    assert selection.to_dict()["cost_device"] == "cuda:0 (NVIDIA H200)" and selection.to_dict()["cpu_seconds"] == 1.23


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluate_selection_refuses_a_missing_gpu_before_any_work(tmp_path):
    done = runner.invoke(app, ["evaluate-selection", "--device", "cuda", "--db", str(tmp_path / "x.db")])
    assert done.exit_code == 2 and "CUDA is not available here" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "x.db").exists()


def test_evaluate_selection_chooses_the_estimator_and_sample_size_inside_the_loop(graded, tmp_path, monkeypatch):
    """Two sample sizes in one run, the nested figure as the report's headline (prior and size: no forward pass)."""
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    store, bench, _ = graded
    calls = []

    def counted(name, *args, **kwargs):
        calls.append(name)
        return estimate(name, *args, **kwargs)

    monkeypatch.setattr("upcycle.selection.evaluation.estimate", counted)
    frame = evaluate_selection(store, bench, ["prior", "size"], examples=[32, 64])
    assert sorted(calls) == sorted(["prior", "size"] * len(TARGETS))  # neither reads the sample: once per target
    estimators = frame[frame["estimator"] != RANDOM]
    by_size = estimators.set_index(["estimator", "target", "examples"])["cpu_seconds"].unstack()
    assert (by_size[32] == by_size[64]).all()  # the same estimate, repeated at each size
    assert sorted(estimators["examples"].unique()) == [32, 64] and frame.loc[frame["estimator"] == RANDOM,
                                                                              "examples"].isna().all()
    assert len(estimators) == 2 * 2 * len(TARGETS) and (frame["estimator"] == RANDOM).sum() == len(TARGETS)
    out = tmp_path / "selection"
    done = runner.invoke(app, ["evaluate-selection", "--estimators", "prior,size", "--examples", "32,64",
                               "--out", str(out), "--db", str(store.path)])
    assert done.exit_code == 0, done.output
    document = json.loads(out.with_suffix(".json").read_text())
    nested = document["nested"]
    assert set(nested["chosen"]) == set(TARGETS) and nested["selection_metric"] == "regret_at_3"
    assert set(nested["chosen"].values()) <= {"prior@32", "prior@64", "size@32", "size@64"}
    assert {"regret_at_1", "regret_at_3", "regret_at_5", "ndcg"} <= set(nested)
    assert set(document["estimators"]) == {"prior@32", "prior@64", "size@32", "size@64", RANDOM}
    markdown = out.with_suffix(".md").read_text()
    assert markdown.index("## Nested leave-one-target-out (the headline)") < markdown.index("## Diagnostic")
    bad = runner.invoke(app, ["evaluate-selection", "--examples", "64,x", "--db", str(store.path)])
    assert bad.exit_code == 2 and "--examples must be" in bad.output


def test_select_with_the_prior_says_whether_to_switch_and_verifies_what_overlaps(graded, shared_data, monkeypatch):
    monkeypatch.setenv("UPCYCLE_DEVICE", "cpu")
    store, bench, _ = graded
    target = shared_data / "poem_sentiment"  # in the grid: its verification finetunes are already stored
    names = [c.checkpoint.name for c in bench.candidates]  # the zoo may hold another architecture by now
    (chosen,) = select(store, target, candidates=names, estimator="prior", verify_top="auto", budget=30.0,
                       protocol="quick", overrides=FAST)
    gains = stored_gains(SelectionContext(store=store, target=load_task(target), candidates=tuple(
        store.get_checkpoint(c.checkpoint.fingerprint) for c in bench.candidates),
        excluded_tasks=overlapping("poem_sentiment")))
    predicted = chosen.predicted_gain
    assert predicted is not None and predicted.gain == pytest.approx(gains.loc[chosen.top.fingerprint].mean())
    low, high = predicted.interval  # a bootstrap over the two other targets' gains
    assert low <= predicted.gain <= high
    assert chosen.recommendation.action in {"switch", "stay", "uncertain"}
    assert chosen.verification.startswith("--verify-top auto: ") and 1 <= len(chosen.verified) - 1 <= 3
    assert all(v.cached for v in chosen.verified) and not any("--budget" in n for n in chosen.estimate.notes)
    # a budget too small for one finetune (50 epochs, none stored) verifies nothing, and says so in one line
    (poor,) = select(store, target, candidates=names, estimator="size", verify_top=2, budget=0.5,
                     protocol="quick", overrides={"epochs": 50})
    assert poor.verified == () and any("so verifying nothing" in note for note in poor.estimate.notes)
    shown = runner.invoke(app, ["select", str(target), "--estimator", "prior", "--candidates", ",".join(names),
                                "--db", str(store.path)])
    assert shown.exit_code == 0 and "predicted gain over" in shown.output and "recommendation:" in shown.output
