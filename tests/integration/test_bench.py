"""The recycling benchmark end to end on a tiny BERT and real shared tasks (subsampled): zoo, grid, views."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import save_tiny_bert
from scipy.stats import spearmanr

from upcycle.errors import ConfigError
from upcycle.ranking import build_leaderboard, gain_matrix, grid_frame, load_bench, plan_bench, run_bench, summarize
from upcycle.ranking.gains import bootstrap_gain_interval, integrity_problems
from upcycle.ranking.leaderboard import EXCLUDED
from upcycle.report.leaderboard import to_csv, to_json, to_markdown
from upcycle.report.model_card import model_index
from upcycle.store import Store
from upcycle.tasks import BUILTIN, Suite, load_suite
from upcycle.zoo import build_zoo

FAST = {"max_train": 48, "max_eval": 48, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_bert, shared_data):
    """A store holding two tiny experts (sst2 and trec_coarse) finetuned from the tiny base."""
    folder = tmp_path_factory.mktemp("zoo")
    store = Store(folder / "zoo.db")
    built = list(build_zoo(store, base=str(tiny_bert), sources=[str(shared_data / "sst2"),
                                                                  str(shared_data / "trec_coarse")],
                           out=folder / "experts", overrides=FAST))
    yield store, built, folder
    store.close()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory, shared_data):
    path = tmp_path_factory.mktemp("suite") / "mini.yaml"
    targets = [str(shared_data / name) for name in ("rotten_tomatoes", "cb", "trec_fine")]
    path.write_text(yaml.safe_dump({"name": "mini", "targets": targets}))
    return path


def stored_means(store: Store, fingerprint: str) -> dict[str, tuple[float, str]]:
    """``{task: (mean score over the stored seeds, rounded as a card rounds, the card's metric name)}`` of the
    finetunes started from ``fingerprint``, read back from the store's results (2 seeds of one protocol each)."""
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for result in store.results(base_fingerprint=fingerprint):
        assert result.metric == "accuracy"
        scores.setdefault((result.task_name, result.protocol), {})[result.seed] = result.score
    assert all(sorted(seeds) == [0, 1] for seeds in scores.values()), scores
    assert len({task for task, _ in scores}) == len(scores)  # one protocol per task
    return {task: (round(float(np.mean(list(seeds.values()))), 4),
                   f"accuracy after finetuning from this checkpoint ({protocol} protocol, mean of 2 seeds)")
            for (task, protocol), seeds in scores.items()}


def card_values(results: list[dict]) -> dict[str, tuple[float, str]]:
    """``{task: (value, metric name)}`` of a model-index block, after checking each entry's labels."""
    values = {}
    for entry in results:
        task = entry["dataset"]["name"]
        assert entry["task"] == {"type": "text-classification"}
        assert entry["dataset"] == {"name": task, "type": task, "split": "test"}
        [metric] = entry["metrics"]
        assert metric["type"] == "accuracy"
        values[task] = (metric["value"], metric["name"])
    return values


def test_zoo_build_registers_experts_with_lineage_and_is_idempotent(zoo, tiny_bert, shared_data):
    store, built, folder = zoo
    names = sorted(entry.name for entry, _, _ in built)
    assert names == [f"{tiny_bert.name}-sst2", f"{tiny_bert.name}-trec_coarse"]
    base_print = store.get_checkpoint(built[0][0].base_fingerprint)
    assert base_print is not None and base_print.path == str(tiny_bert)
    assert {entry.source_task for entry, _, _ in built} == {"sst2", "trec_coarse"}
    again = list(build_zoo(store, base=str(tiny_bert), sources=[str(shared_data / "sst2")], out=folder / "experts",
                           overrides=FAST))
    assert again[0][2] is True  # cached: nothing trained


def test_bench_skips_overlapping_cells_resumes_and_ranks(zoo, tiny_bert, suite_file):
    store, _, _ = zoo
    bench = plan_bench(store, base=str(tiny_bert), suite=str(suite_file), seeds=2, overrides=FAST)
    # 3 targets x 2 seeds x (base + 2 experts) minus overlaps: sst2 expert never on rotten_tomatoes,
    # trec_coarse expert never on trec_fine
    assert len(bench.specs()) == 3 * 2 * 3 - 2 - 2
    sources = {c.checkpoint.name: c.source_task for c in bench.candidates}
    cells = {(c.checkpoint.name, t.name) for c, t, _ in bench.cells()}
    assert not any((name, "rotten_tomatoes") in cells for name, src in sources.items() if src == "sst2")
    assert not any((name, "trec_fine") in cells for name, src in sources.items() if src == "trec_coarse")

    first = list(zip(range(5), run_bench(bench, store)))  # stop early, as an interrupted run would
    assert len(first) == 5 and len(grid_frame(bench, store)) == 5
    resumed = list(run_bench(bench, store))
    assert len(resumed) == len(bench.specs()) - 5 and resumed[-1][1] == resumed[-1][2] == len(bench.specs())
    grid = grid_frame(bench, store)
    assert len(grid) == len(bench.specs()) and not grid.duplicated(["fingerprint", "target", "seed"]).any()
    assert list(run_bench(bench, store)) == []  # nothing left

    saved = load_bench(store, bench.name)
    assert saved == bench
    board = build_leaderboard(saved, store, draws=200)
    assert board.cells_done == board.cells_total == len(bench.specs())
    assert board.rows[0].rank is None and board.rows[0].is_base and board.rows[0].fully_tested
    ranked = board.rows[1:]
    assert [row.rank for row in ranked] == [1, 2]
    assert ranked[0].avg_gain >= ranked[1].avg_gain
    for row in ranked:
        assert row.ci_low <= row.avg_gain <= row.ci_high and row.fully_tested
        assert list(row.values.values()).count(EXCLUDED) == 1
    markdown = to_markdown(board)
    assert "vanilla base" in markdown and EXCLUDED in markdown
    assert json.loads(to_json(board))["cells"]["done"] == len(bench.specs())
    assert to_csv(board).splitlines()[0].startswith("rank,candidate")

    for row in ranked:  # each expert's card: the mean over its 2 stored seeds of every target it was tested on
        card = yaml.safe_load(model_index(store, row.fingerprint, row.candidate))
        assert card["model-index"][0]["name"] == row.candidate
        results = card["model-index"][0]["results"]
        tested = {"cb", "rotten_tomatoes", "trec_fine"} - ({"rotten_tomatoes"} if row.source_task == "sst2"
                                                           else {"trec_fine"})
        assert card_values(results) == stored_means(store, row.fingerprint) and set(card_values(results)) == tested
        # the same numbers from the bench's own grid (joined by spec key)
        own = grid[grid["fingerprint"] == row.fingerprint]
        assert {task: value for task, (value, _) in card_values(results).items()} == {
            target: round(float(rows["score"].mean()), 4) for target, rows in own.groupby("target")}
        assert {name for _, name in card_values(results).values()} == {
            "accuracy after finetuning from this checkpoint (quick+ protocol, mean of 2 seeds)"}
    # the two seeds disagree somewhere, so a card showing one seed instead of the mean would be caught
    experts = grid[~grid["is_base"]]
    assert (experts.groupby(["fingerprint", "target"])["score"].nunique() > 1).any()


def test_cli_bench_leaderboard_report_and_model_card(zoo, tiny_bert, suite_file, tmp_path):
    from typer.testing import CliRunner

    from upcycle.cli import app

    _, _, folder = zoo
    runner = CliRunner()
    db = ["--db", str(folder / "zoo.db")]
    sets = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}")]
    bench = runner.invoke(app, ["bench", "--suite", str(suite_file), "--base", str(tiny_bert), *sets, *db])
    assert bench.exit_code == 0, bench.output
    assert "vanilla base" in bench.output and "to run" in bench.output
    assert "warning: the quick protocol trains each finetune briefly" in bench.output  # says what quick measures
    board = runner.invoke(app, ["leaderboard", "--format", "json", *db])
    assert board.exit_code == 0 and json.loads(board.output)["rows"][0]["rank"] is None
    assert runner.invoke(app, ["leaderboard", "--format", "markdown", *db]).output.startswith("## Leaderboard")
    bad = runner.invoke(app, ["leaderboard", "--format", "xml", *db])
    assert bad.exit_code == 2 and "--format" in bad.output
    too_small = runner.invoke(app, ["analyze", *db])  # two candidates: too few for the analysis
    assert too_small.exit_code == 2 and "at least 3 candidates" in too_small.output
    card = runner.invoke(app, ["model-card", f"{tiny_bert.name}-sst2", *db])
    assert card.exit_code == 0, card.output
    [index] = yaml.safe_load(card.output)["model-index"]
    assert index["name"] == f"{tiny_bert.name}-sst2"
    with Store(folder / "zoo.db") as store:
        expert = store.checkpoint_named(f"{tiny_bert.name}-sst2")
        assert card_values(index["results"]) == stored_means(store, expert.fingerprint)
    assert set(card_values(index["results"])) == {"cb", "trec_fine"}  # never finetuned on its own rotten_tomatoes
    empty = runner.invoke(app, ["leaderboard", "--db", str(tmp_path / "empty.db")])
    assert empty.exit_code == 2 and "No bench" in empty.output

    # a third candidate (another random init, no source task) grows the grid; then the full report
    other = save_tiny_bert(tmp_path / "other-init", seed=1)
    assert runner.invoke(app, ["zoo", "add", str(other), *db]).exit_code == 0
    grown = runner.invoke(app, ["bench", "--suite", str(suite_file), "--base", str(tiny_bert), *sets, *db])
    assert grown.exit_code == 0 and "stored, 6 to run" in grown.output, grown.output
    report = runner.invoke(app, ["report", "--out", str(tmp_path / "out"), "--prefix", "mini", "--probe-target",
                                 "cb", "--probe-examples", "60", *db])
    assert report.exit_code == 0, report.output
    grid = pd.read_csv(tmp_path / "out" / "mini.csv")
    assert list(grid.columns) == ["candidate", "fingerprint", "target", "seed", "metric", "score"] and len(grid) == 20
    analysis = json.loads((tmp_path / "out" / "mini_analysis.json").read_text())
    assert analysis["beating_base"]["candidates"] == 3
    probe = analysis["linear_probe_signal"]
    assert probe["target"] == "cb" and probe["candidates"] == 3 and len(probe["accuracy"]) == 4  # with the base
    # the Spearman of the probe accuracies against the gains, recomputed from the written grid with scipy:
    # gain = candidate's mean over seeds minus the base's, in points; averaged over the other targets
    base_name = tiny_bert.name
    means = grid.groupby(["candidate", "target"])["score"].mean().unstack()
    gains = (means.drop(index=base_name) - means.loc[base_name]) * 100
    assert sorted(gains.index) == sorted(name for name in probe["accuracy"] if name != base_name)
    accuracy = pd.Series({name: probe["accuracy"][name] for name in gains.index})
    elsewhere = gains.drop(columns="cb").mean(axis=1)
    assert probe["spearman_vs_avg_gain_elsewhere"] == pytest.approx(spearmanr(accuracy, elsewhere).statistic)
    assert probe["spearman_vs_gain_on_target"] == pytest.approx(spearmanr(accuracy, gains["cb"]).statistic)
    positive = int((gains.mean(axis=1) > 0).sum())
    assert analysis["beating_base"]["positive_avg_gain"] == positive
    assert analysis["beating_base"]["fraction_positive"] == pytest.approx(positive / 3)
    assert "Additive model" in (tmp_path / "out" / "mini_analysis.md").read_text()
    assert (tmp_path / "out" / "mini_leaderboard.md").read_text().count("\n| ") >= 4


def test_bench_refuses_a_candidate_of_another_architecture(zoo, tiny_bert, suite_file, tmp_path):
    store, _, _ = zoo
    wider = save_tiny_bert(tmp_path / "wide", hidden_size=48, num_attention_heads=2)
    with pytest.raises(ConfigError) as caught:
        plan_bench(store, base=str(tiny_bert), suite=str(suite_file), candidates=[str(wider)], overrides=FAST)
    assert str(caught.value) == (f"Candidates of another architecture than the base {tiny_bert.name} "
                                 "(bert-L2-H32-V30522): wide (bert-L2-H48-V30522). "
                                 "Bench each architecture against its own base.")


def test_suites_builtin_yaml_and_bad_files(tmp_path):
    assert len(BUILTIN["recycling"].targets) == 22 and "esnli" in BUILTIN["recycling"].targets
    suite = BUILTIN["recycling"]
    assert suite.overlaps("sst2", "rotten_tomatoes") and suite.overlaps("trec_fine", "trec_coarse")
    assert suite.overlaps("cola", "cola") and not suite.overlaps("cola", "sst2") and not suite.overlaps(None, "cb")
    custom = tmp_path / "s.yaml"
    custom.write_text("targets: [a, b]\noverlap_groups: [[a, b]]\n")
    assert load_suite(str(custom)).overlaps("a", "b")
    for text, message in [("targets: []", "a suite needs a non-empty list under 'targets'."),
                          ("targets: [a, a]", "a target is listed twice."),
                          ("targets: [a]\noverlap_groups: x",
                           "'overlap_groups' must be a list of lists of task names.")]:
        custom.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_suite(str(custom))
        assert str(caught.value) == f"{custom}: {message}"
    custom.write_text("{{{")
    with pytest.raises(ConfigError, match=rf"(?s)^{re.escape(str(custom))}: not valid YAML \(while parsing .+\)\.$"):
        load_suite(str(custom))
    with pytest.raises(ConfigError) as caught:
        load_suite("nope")
    assert str(caught.value) == f"Unknown suite 'nope': use {', '.join(BUILTIN)} or a YAML file."


def _grid(rows):
    return pd.DataFrame(rows, columns=["candidate", "fingerprint", "source_task", "is_base", "target", "seed",
                                       "metric", "score"])


def test_gains_join_by_target_name_not_position():
    base = [("base", "b", None, True, t, s, "accuracy", v) for t, s, v in
            [("x", 0, 0.5), ("x", 1, 0.7), ("y", 0, 0.2), ("y", 1, 0.2)]]
    # the candidate's rows arrive in a different order than the base's
    cand = [("c", "c", "z", False, t, s, "accuracy", v) for t, s, v in
            [("y", 1, 0.4), ("x", 0, 0.6), ("y", 0, 0.3), ("x", 1, 0.6)]]
    grid = _grid(base + cand)
    gains = gain_matrix(grid)
    assert gains.loc["c", "x"] == pytest.approx(0.0) and gains.loc["c", "y"] == pytest.approx(15.0)
    summary = summarize(grid, {"c": {("x", 0), ("x", 1), ("y", 0), ("y", 1)}}, draws=500)
    row = summary.iloc[0]
    assert row["avg_gain"] == pytest.approx(7.5) and row["wins"] == 1 and row["losses"] == 0
    assert row["worst_loss"] == pytest.approx(0.0) and row["fully_tested"]
    partial = summarize(grid, {"c": {("x", 0), ("x", 1), ("y", 0), ("y", 1), ("y", 2)}}, draws=50)
    assert not partial.iloc[0]["fully_tested"]


def test_bootstrap_interval_covers_and_shrinks_with_more_targets():
    rng = np.random.default_rng(0)
    few = {f"t{i}": rng.normal(0.62, 0.01, 2) for i in range(3)}
    many = {f"t{i}": rng.normal(0.62, 0.01, 2) for i in range(30)}
    base_few = {t: rng.normal(0.60, 0.01, 2) for t in few}
    base_many = {t: rng.normal(0.60, 0.01, 2) for t in many}
    low_few, high_few = bootstrap_gain_interval(few, base_few)
    low_many, high_many = bootstrap_gain_interval(many, base_many)
    assert low_many < 2.0 < high_many  # true gain is 2 points
    assert high_many - low_many < high_few - low_few


def test_integrity_flags_duplicates_impossible_scores_and_identical_vectors():
    rows = [("a", "fa", None, False, "x", 0, "accuracy", 0.5), ("a", "fa", None, False, "x", 0, "accuracy", 0.6),
            ("b", "fb", None, False, "x", 0, "accuracy", 1.3),
            ("c", "fc", None, False, "x", 0, "spearman", float("nan")),
            ("d", "fd", None, False, "x", 0, "accuracy", 0.4), ("d", "fd", None, False, "y", 0, "accuracy", 0.7),
            ("e", "fe", None, False, "x", 0, "accuracy", 0.4), ("e", "fe", None, False, "y", 0, "accuracy", 0.7)]
    assert integrity_problems(_grid(rows)) == [
        "a has several scores for x seed 0",
        "b on x seed 0: accuracy 1.3 is impossible",
        "c on x seed 0: spearman nan is impossible",
        "identical scores on every cell for d, e (same model twice?)",
    ]
    assert integrity_problems(_grid(rows[2:3] + rows[4:6])) == ["b on x seed 0: accuracy 1.3 is impossible"]


def test_suite_dataclass_custom_groups():
    suite = Suite("s", ("a", "b"), (frozenset({"a", "b"}),))
    assert suite.overlaps("a", "b") and not suite.overlaps("a", "c")


def test_linear_probe_scores_separable_features_and_refuses_one_class():
    from upcycle.errors import TaskError
    from upcycle.training import linear_probe_score

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(0, 1, (60, 8)) + np.eye(3, 8)[labels] * 6
    assert linear_probe_score(features, labels) > 0.95
    assert linear_probe_score(rng.normal(0, 1, (60, 8)), labels) < 0.7
    with pytest.raises(TaskError, match="^the sample has a single class; a linear probe needs two classes or more$"):
        linear_probe_score(features, np.zeros(60, dtype=int))


def test_plan_with_an_empty_zoo_benches_the_base_alone_and_bad_seeds_are_refused(tiny_bert, suite_file, tmp_path):
    with Store(tmp_path / "empty.db") as store:
        bench = plan_bench(store, base=str(tiny_bert), suite=str(suite_file), seeds=1, overrides=FAST)
        assert bench.candidates == () and len(bench.specs()) == 3
        board = build_leaderboard(bench, store)
        assert len(board.rows) == 1 and board.cells_done == 0 and not board.rows[0].fully_tested
        with pytest.raises(ConfigError, match=r"^--seeds must be at least 1\.$"):
            plan_bench(store, base=str(tiny_bert), suite=str(suite_file), seeds=0)
