"""A user's path end to end: keep the model you chose, see how certain a number is, read the output in a log."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_OVERRIDES, save_tiny_bert
from typer.testing import CliRunner

from upcycle.cli import app
from upcycle.ranking import plan_bench, run_bench
from upcycle.store import Store
from upcycle.zoo import build_zoo

FAST = {"max_train": 48, "max_eval": 48, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}
SETS = ["--protocol", "quick", *(arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}"))]
runner = CliRunner()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_bert, shared_data):
    """Two tiny experts of one base, and the base's results on the target (so the base is known)."""
    folder = tmp_path_factory.mktemp("user-path")
    with Store(folder / "upcycle.db") as store:
        list(build_zoo(store, base=str(tiny_bert), sources=[str(shared_data / s) for s in ("sst2", "trec_coarse")],
                       out=folder / "experts", overrides=FAST))
        suite = folder / "suite.yaml"
        suite.write_text(yaml.safe_dump({"name": "one", "targets": [str(shared_data / "poem_sentiment")]}))
        list(run_bench(plan_bench(store, base=str(tiny_bert), suite=str(suite), seeds=1, overrides=FAST), store))
    return folder


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def test_select_save_keeps_the_verified_best_prints_where_and_registers_it(zoo, shared_data, tmp_path):
    db = zoo / "upcycle.db"
    kept_folder = tmp_path / "chosen"
    done = invoke("select", shared_data / "poem_sentiment", "--verify-top", 1, "--seeds", 2, "--save", kept_folder,
                  *SETS, "--db", db)
    assert done.exit_code == 0, done.output
    assert f"saved to {kept_folder}" in done.output and "registered as chosen" in done.output
    assert re.search(r"\(95% CI over 2 seeds: \[[-+]\d+\.\d, [-+]\d+\.\d\]\)", done.output), done.output
    assert "start from: " in done.output  # a caveat true of every run is said once, about the target's data
    assert done.output.count("finetuned on poem_sentiment: the test split has 48 examples") == 1
    assert "warning: finetuned on poem_sentiment: the test split has 48 examples" in done.output
    assert (kept_folder / "model.safetensors").exists() and (kept_folder / "upcycle.json").exists()
    with Store(db) as store:
        entry = store.checkpoint_named("chosen")
        assert entry is not None and Path(entry.path) == kept_folder and entry.source_task == "poem_sentiment"
        names = {e.name for e in store.checkpoints()}
        # verification results name the zoo entry they started from, not its folder ("model", "experts/...")
        assert {r.base_name for r in store.results(task="poem_sentiment")} <= names
        fingerprint = entry.fingerprint
    again = invoke("select", shared_data / "poem_sentiment", "--verify-top", 1, "--seeds", 2, "--save", kept_folder,
                   *SETS, "--db", db)  # the kept model is not a candidate for its own data; nothing is retrained
    assert again.exit_code == 0 and "left out, finetuned on poem_sentiment or data it shares: chosen" in again.output
    assert f"saved to {kept_folder}, registered as chosen" in again.output and "train epoch" not in again.output
    with Store(db) as store:
        assert store.checkpoint_named("chosen").fingerprint == fingerprint


def test_select_save_keeps_the_verified_weights_instead_of_training_them_again(zoo, shared_data, tmp_path,
                                                                              monkeypatch):
    """The verifications set their weights aside; the winner's become the kept model, the others are deleted. A run
    killed after verifying loses nothing: the rerun trains nothing and keeps the winner."""
    db = tmp_path / "own.db"
    with sqlite3.connect(zoo / "upcycle.db") as source, sqlite3.connect(db) as copy:
        source.backup(copy)  # the module's store (WAL included), without touching it
    kept_folder = tmp_path / "kept"
    args = ("select", shared_data / "poem_sentiment", "--verify-top", 2, "--save", kept_folder, *SETS,
            "--set", "epochs=2", "--db", db)  # settings no stored finetune has: every verification trains

    def killed(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr("upcycle.selection.selector._keep", killed)  # Ctrl-C once the verifications are done
    assert invoke(*args).exit_code == 130
    monkeypatch.undo()
    assert len(list(tmp_path.glob(".kept.*"))) == 3 and not kept_folder.exists()  # 2 candidates and the base
    mine = [tmp_path / ".kept.backup", tmp_path / ".kept.0123456789ab"]  # hidden siblings upcycle did not write
    for folder in mine:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    done = invoke(*args)
    assert done.exit_code == 0, done.output
    assert "train epoch" not in done.output and "saved to " + str(kept_folder) in done.output
    started = re.search(r"kept: (\S+) finetuned on poem_sentiment", done.output).group(1)
    with Store(db) as store:
        entry = store.checkpoint_named("kept")
        assert entry is not None and Path(entry.path) == kept_folder and entry.source_task == "poem_sentiment"
        assert entry.base_fingerprint == store.checkpoint_named(started).fingerprint
        kept = [r for r in store.results(task="poem_sentiment")  # (another test's model is in the module's store)
                if r.checkpoint_path is not None and Path(r.checkpoint_path).parent == tmp_path]
        assert [r.checkpoint_path for r in kept] == [str(kept_folder)]  # the others' were deleted, and forgotten
        assert kept[0].key == json.loads((kept_folder / "upcycle.json").read_text())["spec_key"]
        assert not any(e.name.startswith(".") for e in store.checkpoints())  # nothing set aside entered the zoo
    assert sorted(tmp_path.glob(".kept.*")) == sorted(mine) and (kept_folder / "model.safetensors").exists()


def test_save_never_overwrites_another_model(zoo, shared_data, tiny_bert, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    done = invoke("finetune", tiny_bert, shared_data / "poem_sentiment", *SETS, "--save", occupied, "--db",
                  tmp_path / "x.db")
    assert done.exit_code == 2 and "already exists" in done.output and (occupied / "notes.txt").read_text() == "mine"


def test_select_refuses_a_save_folder_that_cannot_take_its_model_before_verifying(zoo, shared_data, tiny_bert,
                                                                                  tmp_path):
    db = tmp_path / "own.db"
    other = tmp_path / "other-protocol"  # a finetune on the same data, but under other settings
    done = invoke("finetune", tiny_bert, shared_data / "poem_sentiment", *SETS, "--set", "epochs=2", "--save", other,
                  "--db", db)
    assert done.exit_code == 0, done.output
    before = sorted(other.iterdir())
    refused = invoke("select", shared_data / "poem_sentiment", "--verify-top", 1, "--save", other, *SETS,
                     "--candidates", zoo / "experts" / "tiny-bert0-sst2", "--db", db)
    assert refused.exit_code == 2 and "already exists" in refused.output, refused.output
    assert "train epoch" not in refused.output and sorted(other.iterdir()) == before
    with Store(db) as store:
        assert len(store.results()) == 1  # the finetune above; select verified nothing


def test_select_save_without_verification_keeps_the_top_pick(zoo, shared_data, tmp_path):
    done = invoke("select", shared_data / "poem_sentiment", "--save", tmp_path / "top", *SETS, "--db",
                  zoo / "upcycle.db")
    assert done.exit_code == 0, done.output
    top = re.search(r"│\s+1 │ (\S+)", done.output).group(1)
    assert f"kept: {top} finetuned on poem_sentiment" in done.output and (tmp_path / "top" / "config.json").exists()


def test_a_bad_set_key_fails_before_any_work(zoo, shared_data):
    bad = invoke("select", shared_data / "poem_sentiment", "--set", "epoch=3", "--db", zoo / "upcycle.db")
    assert bad.exit_code == 2 and "Unknown protocol field" in bad.output


def test_finetune_says_it_kept_no_weights_and_logs_read_well(tiny_bert, sentiment_folder, tmp_path):
    """Run as in a log file: stdout and stderr are pipes, no COLUMNS: nothing wraps, each finished phase is a line
    naming the base and the task."""
    sets = [arg for key, value in (TINY_OVERRIDES | {"epochs": 1}).items() for arg in ("--set", f"{key}={value}")]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    command = [sys.executable, "-m", "upcycle", "finetune", str(tiny_bert), str(sentiment_folder), "--text-column",
               "review", "--label-column", "sentiment", *sets, "--db", str(tmp_path / "log.db")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the finetuned weights were not kept: rerun with --save DIR" in done.stdout
    assert re.search(r"warning: the test split has \d+ examples \(one example is", done.stderr)  # a small split
    train_line = next(line for line in done.stdout.splitlines() if line.startswith("train "))
    assert len(train_line) > 80 and train_line.endswith(")")  # one line, not wrapped at 80 columns
    assert re.search(rf"{tiny_bert.name} on toy_sentiment: train epoch 1/1: \d+ examples in \d+\.\ds", done.stderr)
    assert re.search(rf"{tiny_bert.name} on toy_sentiment: eval test: \d+ examples in", done.stderr)


def test_zoo_list_in_a_log_shows_whole_names_and_paths(tiny_bert, tmp_path):
    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / "an-expert-finetuned-on-a-dataset-with-a-long-name"
    save_tiny_bert(deep, seed=3)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    db = str(tmp_path / "zoo.db")
    upcycle = [sys.executable, "-m", "upcycle"]
    subprocess.run([*upcycle, "zoo", "add", str(deep), "--db", db], check=True, capture_output=True, env=env)
    listing = subprocess.run([*upcycle, "zoo", "list", "--db", db], capture_output=True, text=True, env=env).stdout
    assert str(deep) in listing and deep.name in listing and "…" not in listing and "..." not in listing


def test_select_takes_allow_pickle_as_its_error_messages_suggest():
    assert "--allow-pickle" in runner.invoke(app, ["select", "--help"], env={"COLUMNS": "200"}).output
