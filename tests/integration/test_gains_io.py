"""``upcycle leaderboard export | import`` end to end: a tiny grid's leaderboard travels to a fresh store as a
gains file and the prior uses it; the real published roberta-base table imports screened; bad files are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from upcycle.cli import app
from upcycle.ranking import gain_matrix, grid_frame, plan_bench, run_bench
from upcycle.selection.context import CostMeter, SelectionContext
from upcycle.selection.estimate import estimate
from upcycle.selection.estimators.prior import prior_gain_rows
from upcycle.store import Store
from upcycle.tasks import load_task, overlapping
from upcycle.zoo import build_zoo, zoo_add

FAST = {"max_train": 48, "max_eval": 48, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}
PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "external" / "model-recycling"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory, tiny_bert, shared_data):
    """One tiny expert (sst2) and the tiny base on two targets, one seed: 1 + 4 finetunes of 48 examples."""
    folder = tmp_path_factory.mktemp("gains")
    store = Store(folder / "grid.db")
    [(expert, _, _)] = build_zoo(store, base=str(tiny_bert), sources=[str(shared_data / "sst2")],
                                 out=folder / "experts", overrides=FAST)
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "io", "targets": [str(shared_data / t) for t in ("cb", "rte")]}))
    bench = plan_bench(store, base=str(tiny_bert), suite=str(suite), seeds=1, overrides=FAST, name="io")
    list(run_bench(bench, store))
    yield store, bench, expert, folder
    store.close()


def test_export_then_import_carries_the_leaderboard_to_a_fresh_store_and_the_prior_uses_it(tiny_grid, shared_data):
    store, bench, expert, folder = tiny_grid
    out = folder / "io_gains.json"
    exported = runner.invoke(app, ["leaderboard", "export", "--bench", "io", "--out", str(out), "--license", "CC0",
                                   "--db", str(store.path)])
    assert exported.exit_code == 0, exported.output
    assert "1 candidates x 2 targets" in exported.output
    document = json.loads(out.read_text())
    [gain_set] = document["sets"]
    expected = gain_matrix(grid_frame(bench, store))
    [candidate] = gain_set["candidates"]
    assert candidate["fingerprint"] == expert.fingerprint and candidate["source_task"] == "sst2"
    assert candidate["gains"] == pytest.approx(expected.loc[expert.fingerprint].to_dict(), abs=1e-4)
    assert gain_set["base"]["fingerprint"] == bench.base.checkpoint.fingerprint and gain_set["base"]["runs"] == 1
    assert document["license"] == "CC0" and "protocol" in document["source"]
    # the leaderboard itself still answers as before (the command is now a group with subcommands)
    board = runner.invoke(app, ["leaderboard", "--format", "json", "--db", str(store.path)])
    assert board.exit_code == 0 and json.loads(board.output)["rows"][1]["fingerprint"] == expert.fingerprint

    # in the store that measured it, the prior reads the bench itself, and the import below changes nothing there
    target = load_task(shared_data / "poem_sentiment")
    here = estimate("prior", SelectionContext(store=store, target=target, candidates=(expert,),
                                              meter=CostMeter(device="cpu")), device="cpu")
    assert here.scores[expert.fingerprint] == pytest.approx(expected.loc[expert.fingerprint].mean())
    assert here.notes == ()
    rows = prior_gain_rows(SelectionContext(store=store, target=target, candidates=(expert,)))
    assert rows[expert.fingerprint][1:] == ("stored benches", "fingerprint")

    fresh = folder / "fresh.db"
    imported = runner.invoke(app, ["leaderboard", "import", str(out), "--db", str(fresh)])
    assert imported.exit_code == 0, imported.output
    assert "1 candidates x 2 targets" in imported.output and "excluded rows: 0" in imported.output
    again = runner.invoke(app, ["leaderboard", "import", str(out), "--db", str(fresh)])
    assert "replacing 1 earlier sets" in again.output
    with Store(fresh) as other:
        assert len(other.imported_gains()) == 1
        entry = zoo_add(other, expert.path, name="renamed-expert")  # the same weights under another name
        context = SelectionContext(store=other, target=target, candidates=(entry,), meter=CostMeter(device="cpu"),
                                   excluded_tasks=overlapping(target.name))
        result = estimate("prior", context, device="cpu")
    assert result.used == "prior"
    assert result.scores[entry.fingerprint] == pytest.approx(expected.loc[expert.fingerprint].mean(), abs=1e-4)
    assert "matched by fingerprint" in result.notes[0] and "imported gains of upcycle bench 'io'" in result.notes[0]


def test_exporting_a_bench_without_results_is_one_line(tmp_path, tiny_bert, shared_data):
    with Store(tmp_path / "empty.db") as store:
        suite = tmp_path / "suite.yaml"
        suite.write_text(yaml.safe_dump({"name": "none", "targets": [str(shared_data / "cb")]}))
        plan_bench(store, base=str(tiny_bert), suite=str(suite), seeds=1, overrides=FAST, name="none")
    shown = runner.invoke(app, ["leaderboard", "export", "--out", str(tmp_path / "x.json"), "--db",
                                str(tmp_path / "empty.db")])
    assert shown.exit_code == 2 and "no stored results" in shown.output and not (tmp_path / "x.json").exists()


def test_the_published_roberta_table_imports_screened(tmp_path):
    db = tmp_path / "published.db"
    shown = runner.invoke(app, ["leaderboard", "import", str(PUBLISHED / "roberta-base_table.csv"), "--base-runs",
                                str(PUBLISHED / "models_results_roberta_base_pretrain.csv"), "--db", str(db)],
                          env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "FacebookAI/roberta-base (roberta-L12-H768-V50265): 317 candidates x 36 targets" in shown.output
    assert ("excluded rows: 961 (891 no target scores, 2 base, 1 duplicate scores, 67 score profile)"
            in shown.output)
    assert "Of the 385 candidate rows with all 36 scores, 67 correlate below 0.9" in shown.output
    with Store(db) as store:
        [row] = store.imported_gains({"roberta-L12-H768-V50265"})
        assert row["license"].startswith("Apache-2.0") and "1c1d4228810ef0506de1a85144a3744b274c8bbc" in row["source"]
        assert store.imported_gains({"bert-L6-H384-V30522"}) == []


@pytest.mark.parametrize(("content", "args", "message"), [
    ('{"format": "upcycle-gains", "version": 1, "source": "x", "license": "y", "sets": [{"arch": "a"}]}', [],
     "invalid gains file: sets.0.base: Field required; sets.0.targets: Field required; sets.0.candidates: Field "
     "required."),
    ("not json at all", [], "not JSON"),
    ("model_name,cb\nx,1\n", [], "needs the base's runs: --base-runs"),
])
def test_a_bad_file_is_one_error_line_and_nothing_is_stored(tmp_path, content, args, message):
    bad = tmp_path / ("bad.csv" if content.startswith("model_name") else "bad.json")
    bad.write_text(content)
    shown = runner.invoke(app, ["leaderboard", "import", str(bad), *args, "--db", str(tmp_path / "x.db")],
                          env={"COLUMNS": "400"})
    assert shown.exit_code == 2
    assert shown.output.count("\n") == 1 and message in shown.output, shown.output
    assert not (tmp_path / "x.db").exists()
