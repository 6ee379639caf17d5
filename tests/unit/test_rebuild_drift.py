"""Pairing reruns with first runs across store exports (benchmarks/rebuild_drift.py) on planted exports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SPEC = importlib.util.spec_from_file_location(
    "rebuild_drift", Path(__file__).parents[2] / "benchmarks" / "rebuild_drift.py")
rebuild_drift = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(rebuild_drift)


def export(cells: list[tuple[str, str, int, float, str, str, str | None]]) -> list[str]:
    """Export lines: a header, then one result row per (candidate, target, seed, score, fingerprint, created_at,
    measured_on)."""
    lines = [json.dumps({"format": "upcycle-store-export", "schema_version": 5})]
    for candidate, target, seed, score, fingerprint, created, measured_on in cells:
        result = {"base_name": candidate, "score": score, "measured_on": measured_on}
        lines.append(json.dumps({"table": "finetune_results", "row": {
            "task_name": target, "seed": seed, "protocol": "converged+", "score": score,
            "base_fingerprint": fingerprint, "created_at": created, "result": json.dumps(result)}}))
    return lines


def test_only_cells_run_again_are_paired_and_a_rebuild_is_told_from_a_retrain():
    before, _ = rebuild_drift.read_export(export([
        ("x", "cb", 0, 0.70, "old-x", "t1", None), ("base", "cb", 0, 0.60, "base", "t1", None),
        ("y", "cb", 0, 0.50, "old-y", "t1", None), ("z", "cb", 0, 0.40, "old-z", "t1", None)]))
    after, _ = rebuild_drift.read_export(export([
        ("x", "cb", 0, 0.72, "new-x", "t2", None),  # rerun on the rebuild
        ("base", "cb", 0, 0.60, "base", "t2", None),  # rerun on the same weights
        ("y", "cb", 0, 0.50, "new-y", "t1", "old-y"),  # adopted: not a rerun
        ("z", "cb", 0, 0.40, "old-z", "t1", None)]))  # the same row: not a rerun
    pairs = rebuild_drift.rerun_pairs(before, after).set_index("candidate")
    assert sorted(pairs.index) == ["base", "x"]
    assert bool(pairs.loc["x", "rebuilt"]) and not bool(pairs.loc["base", "rebuilt"])
    assert np.isclose(pairs.loc["x", "drift"], 0.02) and pairs.loc["base", "drift"] == 0.0


def test_seed_spread_and_the_ratio_interval():
    rows = [("x", 0, 0.5), ("x", 1, 0.6), ("y", 0, 0.5)]  # y has one seed only: no pair
    cells = rebuild_drift.pd.DataFrame([{"candidate": candidate, "target": "cb", "seed": seed, "score": score}
                                        for candidate, seed, score in rows])
    assert np.allclose(rebuild_drift.seed_spread(cells), [0.1])
    low, high = rebuild_drift.ratio_interval(np.array([0.01, 0.01]), np.array([0.1, 0.1]))
    assert np.isclose(low, 0.1) and np.isclose(high, 0.1)
