"""The command line as a user meets it: real commands, a real database, errors without tracebacks."""

from __future__ import annotations

import json

from conftest import TINY_OVERRIDES, sentiment_rows, write_rows
from typer.testing import CliRunner

from upcycle.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False, env={"COLUMNS": "200"})


def overrides(**changes):
    return [item for key, value in (TINY_OVERRIDES | changes).items() for item in ("--set", f"{key}={value}")]


def test_finetune_records_and_second_run_comes_from_the_store(tiny_bert, sentiment_folder, tmp_path):
    db = tmp_path / "cli.db"
    args = ["finetune", tiny_bert, sentiment_folder, "--text-column", "review", "--label-column", "sentiment",
            "--db", db, *overrides(epochs=1)]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "accuracy" in first.output and "macro_f1" in first.output and "from the store" not in first.output
    second = invoke(*args)
    assert second.exit_code == 0 and "from the store" in second.output
    listing = invoke("results", "--db", db)
    assert "toy_sentiment" in listing.output and "1 finetune results" in listing.output


def test_bad_input_exits_2_with_a_message_and_no_traceback(tiny_bert, sentiment_folder, tmp_path):
    db = tmp_path / "cli.db"
    missing_column = invoke("finetune", tiny_bert, sentiment_folder, "--db", db)
    assert missing_column.exit_code == 2
    assert "no column ['text', 'label']" in missing_column.output and "Traceback" not in missing_column.output
    bad_override = invoke("finetune", tiny_bert, sentiment_folder, "--db", db, "--set", "epochz=2")
    assert bad_override.exit_code == 2 and "Unknown protocol field" in bad_override.output
    missing_model = invoke("finetune", tmp_path / "nope", sentiment_folder, "--db", db)
    assert missing_model.exit_code == 2 and "not found" in missing_model.output
    (tmp_path / "junk.db").write_text("junk" * 500)
    corrupt_db = invoke("results", "--db", tmp_path / "junk.db")
    assert corrupt_db.exit_code == 2 and "not a usable upcycle database" in corrupt_db.output


def test_finetune_save_then_zoo_lists_lineage(tiny_bert, sentiment_folder, tmp_path):
    db = tmp_path / "zoo.db"
    saved = invoke("finetune", tiny_bert, sentiment_folder, "--text-column", "review", "--label-column", "sentiment",
                   "--db", db, "--save", tmp_path / "expert", *overrides(epochs=1))
    assert saved.exit_code == 0, saved.output
    provenance = json.loads((tmp_path / "expert" / "upcycle.json").read_text())
    assert provenance["task"] == "toy_sentiment" and provenance["seed"] == 0
    kept = invoke("zoo", "add", tiny_bert, "--name", "tiny-base", "--db", db)  # finetune registered the base
    assert kept.exit_code == 0 and "already registered as" in kept.output and "name kept" in kept.output
    added = invoke("zoo", "add", tiny_bert, "--name", "tiny-base", "--rename", "--db", db)
    assert added.exit_code == 0 and "registered tiny-base" in added.output
    listing = invoke("zoo", "list", "--db", db)
    expert_row = next(line for line in listing.output.splitlines() if "expert" in line)
    assert "toy_sentiment" in expert_row and "tiny-base" in expert_row
    assert "2 checkpoints" in listing.output


def test_kill_9_mid_training_loses_nothing_and_the_rerun_completes(tiny_bert, sentiment_folder, tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db, target = tmp_path / "kill.db", tmp_path / "expert"
    common = ["finetune", str(tiny_bert), str(sentiment_folder), "--text-column", "review", "--label-column",
              "sentiment", "--db", str(db)]
    other_task = write_rows(tmp_path / "other.csv", sentiment_rows(60, seed=7))
    survivor = invoke("finetune", tiny_bert, other_task, "--text-column", "review", "--label-column", "sentiment",
                      "--db", db, *overrides(epochs=1))  # a finished result that must survive the kill
    assert survivor.exit_code == 0
    command = [sys.executable, "-m", "upcycle", *common, "--save", str(target), *overrides(epochs=400)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:  # the second task row is written just before training starts
        rows = sqlite3.connect(db).execute("SELECT count(*) FROM tasks").fetchone()[0]
        if rows == 2 and process.poll() is None:
            break
        time.sleep(0.2)
    time.sleep(2)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not target.exists() and not list(tmp_path.glob(".expert.partial-*"))
    listing = invoke("results", "--db", db)
    assert listing.exit_code == 0 and "1 finetune results" in listing.output
    rerun = invoke(*common, "--save", target, *overrides(epochs=1))
    assert rerun.exit_code == 0 and "from the store" not in rerun.output
    assert (target / "model.safetensors").exists()
    assert "2 finetune results" in invoke("results", "--db", db).output
