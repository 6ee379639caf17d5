"""A database written by upcycle 0.1.0, before the package reshape, is read and matched by this version.

``tests/data/store_0_1_0.sql`` was dumped from a store that 0.1.0 filled (see ``tests/data/make_store_0_1_0.py``):
a tiny BERT finetuned on poem_sentiment and a 1-seed bench on cb and rte. Rebuilding the same checkpoint and
tasks here must give the same fingerprints and spec keys, so every stored result is found, not trained again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import save_tiny_bert

from upcycle import FinetuneSpec, Store, load_bench, plan_bench
from upcycle.execute import pending
from upcycle.ranking import build_leaderboard, grid_frame
from upcycle.store import SCHEMA_VERSION

DUMP = Path(__file__).parents[1] / "data" / "store_0_1_0.sql"
TINY_FINGERPRINT = "1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4"
FINETUNE_KEY = "a81578f4d781e61235c3bb6fa340d7d4c6b4c1cbe29e4871ba212ab27e0974a4"
OVERRIDES = {"max_train": 48, "max_eval": 32, "epochs": 1, "batch_size": 16, "learning_rate": 2e-3}


@pytest.fixture()
def old_store(tmp_path):
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(DUMP.read_text())
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 3  # as 0.1.0 left it
    connection.close()
    with Store(path) as store:
        yield store


def test_a_store_from_0_1_0_is_read_and_its_keys_still_match(old_store, shared_data, tmp_path):
    assert old_store.schema_version == SCHEMA_VERSION  # opened: migrated to this version's schema
    assert old_store.imported_gains() == []  # the tables added since are there, empty
    results = old_store.results()
    assert len(results) == 3 and {r.key for r in results} >= {FINETUNE_KEY}
    for row in old_store._db.execute("SELECT key, spec FROM finetune_results"):  # the stored spec re-keys the same
        assert FinetuneSpec.model_validate_json(row[1]).key() == row[0]

    tiny = save_tiny_bert(tmp_path / "tiny-bert", seed=0)  # the same random BERT, rebuilt by this version
    spec = FinetuneSpec.create(str(tiny), str(shared_data / "poem_sentiment"), seed=3, overrides=OVERRIDES)
    assert spec.base.fingerprint == TINY_FINGERPRINT and spec.key() == FINETUNE_KEY
    assert old_store.get_result(FINETUNE_KEY).task_name == "poem_sentiment"

    saved = load_bench(old_store, "compat")  # the bench definition as 0.1.0 saved it
    frame = grid_frame(saved, old_store)
    assert sorted(frame["target"]) == ["cb", "rte"] and frame["is_base"].all()
    assert build_leaderboard(saved, old_store).cells_done == 2
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: compat\ntargets: [{shared_data / 'cb'}, {shared_data / 'rte'}]\n")
    again = plan_bench(old_store, base=str(tiny), suite=str(suite), seeds=1, overrides=OVERRIDES, name="compat")
    assert pending(again.specs(), old_store) == []  # planned anew: every cell is already stored
