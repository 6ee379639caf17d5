"""Small things a user meets first: --version, readable --help hints, no stray database after a failure, and
results that tell apart two tasks of one name."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_rows
from test_cli import invoke, overrides

import upcycle
from upcycle.store import Store


def database_files(db: Path) -> list[Path]:
    return [path for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if path.exists()]


def test_version_prints_the_package_version_and_no_arguments_still_print_help():
    shown = invoke("--version")
    assert shown.exit_code == 0 and shown.output == f"upcycle {upcycle.__version__}\n"
    bare = invoke()
    assert "Usage" in bare.output and "finetune" in bare.output and "--version" in bare.output


@pytest.mark.parametrize("command", ["finetune", "fuse", "bench"])
def test_help_shows_readable_hints_for_repeatable_options(command):
    shown = invoke(command, "--help")
    assert shown.exit_code == 0
    assert "list[" not in shown.output and "FIELD=VALUE" in shown.output
    if command == "fuse":
        assert "NAME=VALUE" in shown.output


def test_help_and_a_failing_command_create_no_database(tiny_bert, sentiment_folder, tmp_path):
    db = tmp_path / "never.db"
    for command in (["finetune"], ["results"], ["zoo", "list"], ["fuse"]):
        assert invoke(*command, "--help", "--db", db).exit_code == 0
    failed = invoke("finetune", tmp_path / "missing-model", sentiment_folder, "--db", db)
    assert failed.exit_code == 2 and "not found" in failed.output
    bad_column = invoke("finetune", tiny_bert, sentiment_folder, "--db", db, *overrides(epochs=1))
    assert bad_column.exit_code == 2 and "no column" in bad_column.output
    assert database_files(db) == []


def test_a_database_that_existed_survives_a_failing_command_and_a_successful_one_keeps_its_own(
        sentiment_folder, tmp_path):
    existing = tmp_path / "existing.db"
    Store(existing).close()  # an empty database the user made before
    failed = invoke("finetune", tmp_path / "missing-model", sentiment_folder, "--db", existing)
    assert failed.exit_code == 2 and existing.exists()
    new = tmp_path / "new.db"
    listed = invoke("results", "--db", new)
    assert listed.exit_code == 0 and new.exists()


def test_the_store_removes_only_an_empty_database_it_created(tmp_path):
    created = tmp_path / "created.db"
    with pytest.raises(RuntimeError), Store(created):
        raise RuntimeError("the command failed")
    assert database_files(created) == []
    with pytest.raises(RuntimeError), Store(created) as store:  # rows were written before the failure: kept
        store.put_bench("bench", "arch", "{}")
        raise RuntimeError("the command failed later")
    assert created.exists()
    existing = tmp_path / "existing.db"
    Store(existing).close()
    with pytest.raises(RuntimeError), Store(existing) as store:
        assert not store.created and store.is_empty()
        raise RuntimeError("the command failed")
    assert existing.exists()


def test_results_tell_apart_two_tasks_of_one_name(tiny_bert, tmp_path):
    db = tmp_path / "results.db"
    sources = []
    for folder, seed in (("a", 11), ("b", 12)):
        (tmp_path / folder).mkdir()
        sources.append(write_rows(tmp_path / folder / "mydata.csv", sentiment_rows(60, seed=seed)))
        done = invoke("finetune", tiny_bert, sources[-1], "--text-column", "review", "--label-column", "sentiment",
                      "--db", db, *overrides(epochs=1))
        assert done.exit_code == 0, done.output
    listing = invoke("results", "--db", db)
    assert listing.exit_code == 0 and "2 finetune results" in listing.output
    rows = [line for line in listing.output.splitlines() if "mydata" in line]
    assert len(rows) == 2 and all(any(str(source) in row for row in rows) for source in sources)
    with sqlite3.connect(db) as connection:
        fingerprints = dict(connection.execute("SELECT source, fingerprint FROM tasks"))
    first = fingerprints[str(sources[0].resolve())]
    one = invoke("results", "--task", first[:12], "--db", db)
    assert one.exit_code == 0 and "1 finetune results" in one.output
    assert str(sources[0]) in one.output and str(sources[1]) not in one.output
    by_name = invoke("results", "--task", "mydata", "--db", db)
    assert "2 finetune results" in by_name.output
