"""The SQLite results store: idempotent puts, schema versions and migrations, corrupt files, the zoo."""

from __future__ import annotations

import sqlite3

import pytest

from upcycle.checkpoints import CheckpointRef
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
