"""The committed expert-LM benchmark holds what the README quotes: one row per system x unseen task x seed, and a
summary that follows from those rows."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

RESULTS = json.loads((Path(__file__).parents[2] / "benchmarks" / "results" / "experts_smollm2.json").read_text())


def test_one_row_per_system_task_and_seed_with_accuracy_and_macro_f1():
    assert RESULTS["complete"] is True
    seeds = RESULTS["settings"]["seeds"]
    systems = {row["system"] for row in RESULTS["rows"]}
    assert systems == {"base", "multitask", "roe-top1", f"roe-merged-top{RESULTS['settings']['top_k']}", "oracle",
                       "random"}
    keys = [(row["system"], row["task"], row["seed"]) for row in RESULTS["rows"]]
    assert len(keys) == len(set(keys))
    for system in systems:
        expected = {(task, None) for task in RESULTS["unseen_tasks"]} if system == "base" else {
            (task, seed) for task in RESULTS["unseen_tasks"] for seed in range(seeds)}
        assert {(task, seed) for s, task, seed in keys if s == system} == expected, system
    for row in RESULTS["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0 and 0.0 < row["top_option_share"] <= 1.0
        assert 0 < row["n"] <= RESULTS["settings"]["eval_examples"]


def test_the_summary_follows_from_the_rows():
    """Each task's accuracy averaged over seeds, then over tasks, is the summary's mean, inside its interval; the
    oracle is never below the routed expert on a task and seed."""
    for system, entry in RESULTS["summary"]["systems"].items():
        rows = [row for row in RESULTS["rows"] if row["system"] == system]
        by_task = {task: statistics.fmean(r["accuracy"] for r in rows if r["task"] == task)
                   for task in RESULTS["unseen_tasks"]}
        assert entry["accuracy"] == pytest.approx(statistics.fmean(by_task.values()), abs=1e-9)
        assert entry["ci95"][0] <= entry["accuracy"] <= entry["ci95"][1]
    accuracy = {(r["system"], r["task"], r["seed"]): r["accuracy"] for r in RESULTS["rows"]}
    for (system, task, seed), value in accuracy.items():
        if system == "roe-top1":
            assert accuracy[("oracle", task, seed)] >= value


def test_continual_learning_left_the_old_experts_unchanged():
    continual = RESULTS["summary"]["continual"]
    assert continual["old_expert_fingerprints_unchanged"] and continual["old_experts_scores_identical"]
    assert continual["old_experts_max_accuracy_change"] == 0.0
    assert all(t["expert_before"] == t["expert_after"] for run in RESULTS["continual"] for t in run["tasks"])
