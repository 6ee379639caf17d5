"""The zoo's names: unique, never changed silently; rename and remove from the command line."""

from __future__ import annotations

import pytest
from conftest import save_tiny_bert
from typer.testing import CliRunner

from upcycle.checkpoints import resolve_checkpoint
from upcycle.cli import app
from upcycle.errors import ConfigError
from upcycle.store import Store
from upcycle.zoo import register, zoo_add, zoo_remove, zoo_rename

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False, env={"COLUMNS": "300"})


@pytest.fixture()
def two(tmp_path):
    return save_tiny_bert(tmp_path / "a" / "tiny", seed=0), save_tiny_bert(tmp_path / "b" / "tiny", seed=1)


def test_a_registered_checkpoint_keeps_its_name_unless_renamed(two, store):
    first, _ = two
    entry = zoo_add(store, str(first), name="expert")
    assert zoo_add(store, str(first), name="other").name == "expert"  # no silent rename
    assert zoo_add(store, str(first)).name == "expert"
    assert zoo_add(store, str(first), name="other", rename=True).name == "other"
    assert ([e.name for e in store.checkpoints()] == ["other"]
            and entry.fingerprint == store.checkpoints()[0].fingerprint)


def test_names_are_unique(two, store, tmp_path):
    first, second = two
    zoo_add(store, str(first), name="expert")
    with pytest.raises(ConfigError, match="already has a checkpoint named 'expert'"):
        zoo_add(store, str(second), name="expert")
    b = register(store, resolve_checkpoint(second))  # the folder's name, 'tiny', is free
    c = register(store, resolve_checkpoint(save_tiny_bert(tmp_path / "c" / "tiny", seed=2)))  # ... and now taken
    assert b.name == "tiny" and c.name == f"tiny-{c.fingerprint[:8]}"
    assert len({e.name for e in store.checkpoints()}) == len(store.checkpoints()) == 3
    with pytest.raises(ConfigError, match="already has a checkpoint named"):
        zoo_rename(store, c.name, "expert")


def test_rename_and_remove_from_the_command_line(two, tmp_path):
    first, second = two
    db = tmp_path / "zoo.db"
    assert invoke("zoo", "add", first, "--name", "expert", "--db", db).exit_code == 0
    again = invoke("zoo", "add", first, "--name", "renamed", "--db", db)
    assert again.exit_code == 0 and "already registered as expert" in again.output and "--rename" in again.output
    assert invoke("zoo", "rename", "expert", "renamed", "--db", db).exit_code == 0
    assert invoke("zoo", "add", second, "--name", "keeper", "--db", db).exit_code == 0
    listing = invoke("zoo", "list", "--db", db).output
    assert "renamed" in listing and "keeper" in listing and str(first) in listing  # full paths, no "..."
    removed = invoke("zoo", "remove", "renamed", "--db", db)
    assert removed.exit_code == 0 and "is kept" in removed.output and (first / "config.json").exists()
    deleted = invoke("zoo", "remove", "keeper", "--delete-files", "--db", db)
    assert deleted.exit_code == 0 and not second.exists()
    missing = invoke("zoo", "remove", "nobody", "--db", db)
    assert missing.exit_code == 2 and "No zoo checkpoint is named 'nobody'" in missing.output
    with Store(db) as store:
        assert store.checkpoints() == []
        bundled = register(store, resolve_checkpoint("minilm"))
        with pytest.raises(ConfigError, match="bundled"):  # the package's own model is never deleted
            zoo_remove(store, bundled.name, delete_files=True)
        assert store.checkpoints() == [bundled] and resolve_checkpoint("minilm").path.exists()


def test_rich_markup_in_a_name_is_printed_literally(two, tmp_path):
    first, _ = two
    db = tmp_path / "zoo.db"
    added = invoke("zoo", "add", first, "--name", "[bold red]loud[/bold red]", "--db", db)
    assert added.exit_code == 0 and "registered [bold red]loud[/bold red]" in added.output
    assert "[bold red]loud[/bold red]" in invoke("zoo", "list", "--db", db).output
