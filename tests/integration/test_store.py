"""The SQLite results store: idempotent puts, schema versions and migrations, corrupt files, the zoo, and merging
another store, or an export of one, into one (`upcycle store merge` / `export`: a grid run on another machine, a
grid's results committed as text)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from upcycle.checkpoints import CheckpointRef
from upcycle.cli import app
from upcycle.errors import StoreError
from upcycle.protocols import PRESETS
from upcycle.specs import FinetuneResult, FinetuneSpec
from upcycle.store import SCHEMA_VERSION, Store, migrate
from upcycle.tasks import TaskRef


def make_spec(seed: int = 0) -> FinetuneSpec:
    base = CheckpointRef(reference="/models/a", name="a", fingerprint="f" * 64, model_type="bert")
    task = TaskRef(source="/data/t", name="t", fingerprint="e" * 64)
    return FinetuneSpec(base=base, task=task, seed=seed, protocol=PRESETS["quick"])


def make_result(spec: FinetuneSpec, score: float) -> FinetuneResult:
    return FinetuneResult(
        key=spec.key(), task_name="t", base_name="a", seed=spec.seed, protocol="quick", metric="accuracy",
        score=score, metrics={"accuracy": score}, n_train=10, n_test=10, epochs_run=1, train_seconds=1.0,
        eval_seconds=1.0, train_examples_per_s=10.0, eval_examples_per_s=10.0, eval_precision="fp32",
        versions={}, created_at="2026-01-01T00:00:00+00:00",
    )


def test_put_is_idempotent_and_survives_reopening(tmp_path):
    spec = make_spec()
    with Store(tmp_path / "r.db") as store:
        assert store.get_result(spec.key()) is None
        store.put_result(spec, make_result(spec, 0.5))
        store.put_result(spec, make_result(spec, 0.75))  # --force replaces, never duplicates
    with Store(tmp_path / "r.db") as store:
        assert [r.score for r in store.results()] == [0.75]
        assert store.get_result(spec.key()).metrics == {"accuracy": 0.75}
        assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(tmp_path / "r.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_result_under_the_wrong_spec_is_refused(store):
    with pytest.raises(StoreError, match="keys differ"):
        store.put_result(make_spec(seed=1), make_result(make_spec(seed=0), 0.5))
    assert store.results() == []


def test_spec_key_depends_on_content_not_location():
    spec = make_spec()
    moved = spec.model_copy(update={"base": spec.base.model_copy(update={"reference": "/elsewhere", "name": "b"})})
    assert moved.key() == spec.key()
    assert make_spec(seed=1).key() != spec.key()
    other_protocol = spec.model_copy(update={"protocol": PRESETS["quick"].with_overrides({"epochs": 3})})
    assert other_protocol.key() != spec.key()
    renamed = spec.model_copy(update={"protocol": PRESETS["quick"].with_overrides({"name": "mine"})})
    assert renamed.key() == spec.key()


def test_migrations_apply_in_order_and_newer_schemas_are_refused(tmp_path):
    steps = ["CREATE TABLE a (x INTEGER);", "ALTER TABLE a ADD COLUMN y TEXT;"]
    connection = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(connection, steps[:1]) == 0
    connection.execute("INSERT INTO a (x) VALUES (1)")
    assert migrate(connection, steps) == 1
    assert connection.execute("SELECT x, y FROM a").fetchall() == [(1, None)]
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
    with pytest.raises(StoreError, match="newer"):
        migrate(connection, steps[:1])


def test_failed_migration_leaves_the_database_as_it_was(tmp_path):
    connection = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    migrate(connection, ["CREATE TABLE a (x INTEGER);"])
    with pytest.raises(sqlite3.OperationalError):
        migrate(connection, ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y); ALTER TABLE nope ADD z;"])
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'b'").fetchone() is None


def test_database_from_a_newer_upcycle_is_refused(tmp_path):
    sqlite3.connect(tmp_path / "new.db").execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this upcycle"):
        Store(tmp_path / "new.db")


def test_corrupt_database_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="bad.db: not a usable upcycle database"):
        Store(tmp_path / "bad.db")
    assert (tmp_path / "bad.db").read_bytes() == b"this is not sqlite" * 100  # nothing overwritten


def test_zoo_entries_keep_lineage(store):
    store.put_checkpoint(fingerprint="b" * 64, name="base", path="/b", arch="bert-L2", model_type="bert")
    store.put_checkpoint(fingerprint="c" * 64, name="expert", path="/c", arch="bert-L2", model_type="bert",
                         source_task="sst2", base_fingerprint="b" * 64)
    store.put_checkpoint(fingerprint="c" * 64, name="renamed", path="/c2", arch="bert-L2", model_type="bert")
    entry = store.get_checkpoint("c" * 64)
    assert (entry.name, entry.path, entry.source_task, entry.base_fingerprint) == ("renamed", "/c2", "sst2", "b" * 64)
    assert [e.name for e in store.checkpoints()] == ["base", "renamed"]


# ---------------------------------------------------------------- merging stores

runner = CliRunner()


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill(path, scores: dict[int, float], *, name: str = "expert") -> None:
    """A store holding one zoo entry, a bench, cached features and one result per seed."""
    with Store(path) as store:
        store.put_checkpoint(fingerprint="c" * 64, name=name, path="/c", arch="bert-L2", model_type="bert")
        store.put_bench("grid", "bert-L2", '{"targets": ["t"]}')
        store.put_features("c" * 64, "e" * 64, "64", np.ones((4, 3)), 1.5)
        for seed, score in scores.items():
            spec = make_spec(seed)
            store.put_result(spec, make_result(spec, score))


def assert_merge_refused_and_nothing_changed(source, here, message: str) -> None:
    """Merging ``source`` into a filled store at ``here`` fails with ``message`` and leaves its file as it was."""
    fill(here, {})
    before = digest(here)
    with Store(here) as store, pytest.raises(StoreError, match=message):
        store.merge_from(source)
    assert digest(here) == before


def test_merge_copies_what_is_missing_keeps_what_is_stored_and_never_changes_the_source(tmp_path):
    fill(tmp_path / "gpu.db", {0: 0.5, 1: 0.6, 2: 0.7})
    fill(tmp_path / "here.db", {0: 0.5, 1: 0.65})
    before = digest(tmp_path / "gpu.db")
    with Store(tmp_path / "here.db") as store:
        summary = store.merge_from(tmp_path / "gpu.db")
        assert summary.added["finetune_results"] == 1 and summary.present["finetune_results"] == 2
        assert summary.added["checkpoints"] == 0 and summary.present["features"] == 1
        assert summary.differing == ["t seed 1 from ffffffffffff: 0.6500 here, 0.6000 there"]
        assert summary.skipped == []
        assert sorted((r.seed, r.score) for r in store.results()) == [(0, 0.5), (1, 0.65), (2, 0.7)]
        again = store.merge_from(tmp_path / "gpu.db")
        assert sum(again.added.values()) == 0  # idempotent
    assert digest(tmp_path / "gpu.db") == before


def test_merge_into_an_empty_store_copies_everything(tmp_path):
    fill(tmp_path / "gpu.db", {0: 0.5, 1: 0.6})
    with Store(tmp_path / "new.db") as store:
        summary = store.merge_from(tmp_path / "gpu.db")
        assert {table: summary.added[table] for table in ("checkpoints", "benches", "features", "finetune_results")} \
            == {"checkpoints": 1, "benches": 1, "features": 1, "finetune_results": 2}
        assert store.checkpoint_named("expert").fingerprint == "c" * 64
        features, seconds = store.get_features("c" * 64, "e" * 64, "64")
        assert features.shape == (4, 3) and seconds == 1.5


def test_a_zoo_name_taken_by_another_checkpoint_is_not_copied_but_its_results_are(tmp_path):
    fill(tmp_path / "gpu.db", {0: 0.5})
    with Store(tmp_path / "here.db") as store:
        store.put_checkpoint(fingerprint="d" * 64, name="expert", path="/d", arch="bert-L2", model_type="bert")
        summary = store.merge_from(tmp_path / "gpu.db")
        assert summary.added["finetune_results"] == 1
        assert len(summary.skipped) == 1 and "the name is another checkpoint here" in summary.skipped[0]
        assert store.checkpoint_named("expert").fingerprint == "d" * 64


@pytest.mark.parametrize("damage, message", [
    ("UPDATE finetune_results SET score = 9e999", "not a finite number"),
    ("UPDATE finetune_results SET score = 0.99", "disagrees with its row"),
    ("UPDATE finetune_results SET result = '{'", "does not parse"),
])
def test_a_damaged_source_is_refused_whole_and_changes_nothing(tmp_path, damage, message):
    fill(tmp_path / "gpu.db", {0: 0.5, 1: 0.6})
    connection = sqlite3.connect(tmp_path / "gpu.db")
    connection.execute(damage + " WHERE seed = 1")
    connection.commit()
    connection.close()
    assert_merge_refused_and_nothing_changed(tmp_path / "gpu.db", tmp_path / "here.db", message)


def test_sources_that_cannot_be_merged_are_clear_errors(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    sqlite3.connect(tmp_path / "plain.db").execute("CREATE TABLE x (y)")
    sqlite3.connect(tmp_path / "newer.db").execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with Store(tmp_path / "here.db") as store:
        for name, message in (("junk.db", "not a usable upcycle database"), ("plain.db", "no finetune_results"),
                              ("newer.db", "newer than this upcycle"), ("missing.db", "no such database"),
                              ("here.db", "is this store")):
            with pytest.raises(StoreError, match=message):
                store.merge_from(tmp_path / name)
    assert not (tmp_path / "missing.db").exists()


def test_the_cli_prints_what_it_copied_and_where_the_stores_disagree(tmp_path):
    fill(tmp_path / "gpu.db", {0: 0.5, 1: 0.6})
    fill(tmp_path / "here.db", {1: 0.65})
    outcome = runner.invoke(app, ["store", "merge", str(tmp_path / "gpu.db"), "--db", str(tmp_path / "here.db")])
    assert outcome.exit_code == 0, outcome.output
    assert "finetune_results │ 1" in outcome.output
    assert "1 stored in both with different scores" in outcome.output and "0.6500 here, 0.6000 there" in outcome.output
    outcome = runner.invoke(app, ["store", "merge", str(tmp_path / "nope.db"), "--db", str(tmp_path / "here.db")])
    assert outcome.exit_code == 2 and "no such database" in outcome.output


def build_of(path, fingerprint: str, scores: dict[int, float], recipe: str = "r" * 64) -> None:
    """A store holding a zoo entry ``expert`` (weights ``fingerprint``, trained by ``recipe``) and its results."""
    base = CheckpointRef(reference=f"/experts/{fingerprint[0]}", name="expert", fingerprint=fingerprint,
                         model_type="bert")
    with Store(path) as store:
        store.put_checkpoint(fingerprint=fingerprint, name="expert", path=base.reference, arch="bert-L2",
                             model_type="bert", provenance={"spec_key": recipe, "seed": 0})
        for seed, score in scores.items():
            spec = make_spec(seed).model_copy(update={"base": base})
            store.put_result(spec, make_result(spec, score))


def test_results_of_a_build_elsewhere_are_adopted_for_the_rebuild_of_the_same_recipe_here_only_when_asked(tmp_path):
    build_of(tmp_path / "first.db", "a" * 64, {0: 0.5, 1: 0.6})  # the first machine's build and its cells
    build_of(tmp_path / "here.db", "b" * 64, {1: 0.61})  # rebuilt here (other rounding), one cell run again
    with Store(tmp_path / "here.db") as store:
        summary = store.merge_from(tmp_path / "first.db", adopt_rebuilds=True)
        assert summary.adopted == ["expert: 2 result(s) measured on aaaaaaaaaaaa, a build of the same recipe, "
                                   "adopted for bbbbbbbbbbbb here"]
        assert summary.differing == ["t seed 1 from bbbbbbbbbbbb: 0.6100 here, 0.6000 there"]  # the rebuild's drift
        assert summary.skipped == [] and summary.added["checkpoints"] == 0
        results = {r.seed: r for r in store.results(base_fingerprint="b" * 64)}
        assert (results[0].score, results[0].measured_on) == (0.5, "a" * 64)
        assert (results[1].score, results[1].measured_on) == (0.61, None)
        assert store.results(base_fingerprint="a" * 64) == []
        spec = make_spec(0).model_copy(update={"base": store.checkpoint_named("expert").ref()})
        assert store.get_result(spec.key()).score == 0.5  # the bench's key for the rebuild finds it
        rerun = make_spec(1).model_copy(update={"base": spec.base})
        assert store.measured_elsewhere([spec.key(), rerun.key(), "x" * 64]) == {spec.key(): "a" * 64}
        assert sum(store.merge_from(tmp_path / "first.db", adopt_rebuilds=True).added.values()) == 0
        store.export_to(tmp_path / "here.jsonl")
    build_of(tmp_path / "third.db", "c" * 64, {})  # a third machine adopts the export: the cell keeps its origin
    with Store(tmp_path / "third.db") as store:
        store.merge_from(tmp_path / "here.jsonl", adopt_rebuilds=True)
        assert {r.seed: r.measured_on for r in store.results()} == {0: "a" * 64, 1: "b" * 64}
    build_of(tmp_path / "plain.db", "b" * 64, {})
    build_of(tmp_path / "other.db", "d" * 64, {}, recipe="s" * 64)  # another recipe: never adopted
    for name in ("plain.db", "other.db"):
        with Store(tmp_path / name) as store:
            summary = store.merge_from(tmp_path / "first.db", adopt_rebuilds=name == "other.db")
            assert summary.adopted == [] and "the name is another checkpoint here" in summary.skipped[0]
            assert {r.measured_on for r in store.results()} == {None}
            assert len(store.results(base_fingerprint="a" * 64)) == 2


def test_the_cli_adopts_rebuilds_when_asked(tmp_path):
    build_of(tmp_path / "first.db", "a" * 64, {0: 0.5})
    build_of(tmp_path / "here.db", "b" * 64, {})
    outcome = runner.invoke(app, ["store", "merge", str(tmp_path / "first.db"), "--db", str(tmp_path / "here.db"),
                                  "--adopt-rebuilds"])
    assert outcome.exit_code == 0, outcome.output
    assert "1 rebuilds adopted" in outcome.output and "expert: 1 result(s) measured on aaaaaaaaaaaa" in outcome.output


# ---------------------------------------------------------------- exports


def test_an_export_merges_back_like_the_database_blobs_included_and_grows_by_added_lines(tmp_path):
    fill(tmp_path / "grid.db", {0: 0.5, 1: 0.6})
    with Store(tmp_path / "grid.db") as store:
        store.put_zero_shot("z" * 64, {"model_fingerprint": "c" * 64, "task_fingerprint": "e" * 64, "method": "direct"},
                            {"task": "t", "n": 2, "num_options": 3}, np.arange(6.0).reshape(2, 3))
        counts = store.export_to(tmp_path / "grid.jsonl", features=True)
    assert counts["finetune_results"] == 2 and counts["features"] == 1 and counts["zero_shot_scores"] == 1
    first = (tmp_path / "grid.jsonl").read_text().splitlines()
    assert json.loads(first[0]) == {"format": "upcycle-store-export", "schema_version": SCHEMA_VERSION}
    with Store(tmp_path / "new.db") as store:
        summary = store.merge_from(tmp_path / "grid.jsonl")
        assert summary.added["finetune_results"] == 2 and summary.added["checkpoints"] == 1
        assert sorted((r.seed, r.score) for r in store.results()) == [(0, 0.5), (1, 0.6)]
        features, seconds = store.get_features("c" * 64, "e" * 64, "64")
        assert features.shape == (4, 3) and seconds == 1.5
        result, scores = store.get_zero_shot("z" * 64)
        assert result["n"] == 2 and scores.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert sum(store.merge_from(tmp_path / "grid.jsonl").added.values()) == 0  # idempotent
    fill(tmp_path / "grid.db", {2: 0.7})  # the grid grew: its new export only adds lines
    with Store(tmp_path / "grid.db") as store:
        store.export_to(tmp_path / "grid.jsonl", features=True)
    grown = (tmp_path / "grid.jsonl").read_text().splitlines()
    assert len(grown) == len(first) + 1 and set(first) <= set(grown)


def test_the_feature_cache_is_left_out_of_an_export_unless_asked(tmp_path):
    fill(tmp_path / "grid.db", {0: 0.5})
    with Store(tmp_path / "grid.db") as store:
        assert "features" not in store.export_to(tmp_path / "grid.jsonl")
    assert '"table": "features"' not in (tmp_path / "grid.jsonl").read_text()


@pytest.mark.parametrize("damage, message", [
    (lambda lines: lines[:1] + [lines[1][:-5]] + lines[2:], "line 2: not a row"),
    (lambda lines: ['{"format": "csv"}'] + lines[1:], "not an upcycle store export"),
    (lambda lines: [json.dumps({"format": "upcycle-store-export", "schema_version": SCHEMA_VERSION + 1})]
     + lines[1:], "newer than this upcycle"),
    (lambda lines: [line.replace('"score": 0.6', '"score": 0.9') for line in lines], "disagrees with its row"),
])
def test_a_damaged_export_is_refused_whole_and_changes_nothing(tmp_path, damage, message):
    fill(tmp_path / "grid.db", {0: 0.5, 1: 0.6})
    with Store(tmp_path / "grid.db") as store:
        store.export_to(tmp_path / "grid.jsonl")
    lines = (tmp_path / "grid.jsonl").read_text().splitlines()
    (tmp_path / "grid.jsonl").write_text("\n".join(damage(lines)) + "\n")
    assert_merge_refused_and_nothing_changed(tmp_path / "grid.jsonl", tmp_path / "here.db", message)


def test_the_cli_exports_and_merges_an_export(tmp_path):
    fill(tmp_path / "grid.db", {0: 0.5, 1: 0.6})
    outcome = runner.invoke(app, ["store", "export", str(tmp_path / "out" / "grid.jsonl"),
                                  "--db", str(tmp_path / "grid.db")])
    assert outcome.exit_code == 0, outcome.output
    assert "finetune_results │ 2" in outcome.output
    outcome = runner.invoke(app, ["store", "merge", str(tmp_path / "out" / "grid.jsonl"),
                                  "--db", str(tmp_path / "here.db")])
    assert outcome.exit_code == 0 and "finetune_results │ 2" in outcome.output, outcome.output
    outcome = runner.invoke(app, ["store", "export", str(tmp_path / "x.jsonl"), "--db", str(tmp_path / "none.db")])
    assert outcome.exit_code == 2 and "no such database" in outcome.output
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "x.jsonl").exists()


def test_an_export_names_no_folder_of_the_machine_it_came_from(tmp_path):
    repo = tmp_path / "work" / "repo"
    with Store(tmp_path / "grid.db") as store:
        store.put_checkpoint(fingerprint="c" * 64, name="expert", path=f"{repo}/runs/experts/a", arch="bert-L2",
                             model_type="bert")
        store.put_task(fingerprint="e" * 64, name="t", source=f"{tmp_path}/work/shared/datasets/t", kind="text",
                       num_labels=2, sizes={"train": 10})
        store.put_checkpoint(fingerprint="d" * 64, name="other", path="/opt/models/b", arch="bert-L2",
                             model_type="bert")
        store.export_to(tmp_path / "grid.jsonl", relative_to=repo)
    text = (tmp_path / "grid.jsonl").read_text()
    assert str(tmp_path) not in text
    assert '"path": "runs/experts/a"' in text and '"source": "../shared/datasets/t"' in text
    assert '"path": "/opt/models/b"' in text  # under no ancestor of the working directory but the root: kept


def test_a_bench_is_defined_differently_only_when_what_it_grids_differs_not_where_its_files_were(tmp_path):
    def definition(path: str, fingerprint: str) -> str:
        return json.dumps({"base": {"checkpoint": {"reference": f"{path}/base", "fingerprint": fingerprint}},
                           "targets": [{"source": f"{path}/datasets/t", "fingerprint": "e" * 64}]})

    for name, path, fingerprint in (("here.db", "/work/repo", "b" * 64), ("moved.db", "runs", "b" * 64),
                                    ("other.db", "/work/repo", "f" * 64)):
        with Store(tmp_path / name) as store:
            store.put_bench("grid", "bert-L2", definition(path, fingerprint))
    with Store(tmp_path / "here.db") as store:
        assert store.merge_from(tmp_path / "moved.db").skipped == []
        assert store.merge_from(tmp_path / "other.db").skipped == [
            "bench grid: defined differently here; this store's kept"]
        assert json.loads(store.get_bench("grid"))["base"]["checkpoint"]["reference"] == "/work/repo/base"
