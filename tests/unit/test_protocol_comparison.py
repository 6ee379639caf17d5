"""The quick-vs-converged comparison (benchmarks/protocol_comparison.py) on planted grids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SPEC = importlib.util.spec_from_file_location(
    "protocol_comparison", Path(__file__).parents[2] / "benchmarks" / "protocol_comparison.py")
protocol_comparison = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(protocol_comparison)


def grid(base: dict[str, float], gains: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Two seeds per cell, 0.01 either side of the planted mean; gains in points over the base."""
    rows = []
    for candidate, by_target in {"minilm": dict.fromkeys(base, 0.0), **gains}.items():
        for target, gain in by_target.items():
            for seed, wobble in enumerate((-0.01, 0.01)):
                rows.append({"candidate": candidate, "fingerprint": f"fp-{candidate}", "target": target,
                             "seed": seed, "metric": "accuracy", "score": base[target] + gain / 100 + wobble})
    return pd.DataFrame(rows).assign(is_base=lambda frame: frame["candidate"] == "minilm")


QUICK = grid({"a": 0.50, "b": 0.10, "c": 0.60},
             {"x": {"a": 5.0, "b": 40.0, "c": 3.0}, "y": {"a": 1.0, "b": 20.0, "c": 2.0},
              "z": {"a": -2.0, "b": 10.0, "c": 0.0}})
CONVERGED = grid({"a": 0.60, "b": 0.80},  # c not measured yet
                 {"x": {"a": -1.0, "b": 0.0}, "y": {"a": 2.0, "b": 1.0}, "z": {"a": 1.0, "b": 2.0}})


def test_only_what_both_protocols_measured_is_compared():
    quick, converged = protocol_comparison.shared_cells(QUICK, CONVERGED)
    assert set(quick["target"]) == set(converged["target"]) == {"a", "b"}
    assert len(quick) == len(converged) == 4 * 2 * 2
    one_seed = CONVERGED[(CONVERGED["seed"] == 0) | CONVERGED["is_base"]]  # a running grid: candidates' seed 0 only
    quick, converged = protocol_comparison.shared_cells(QUICK, one_seed)
    assert len(quick) == len(converged) == 2 * 2 + 3 * 2 and set(quick.loc[~quick["is_base"], "seed"]) == {0}


def test_gains_ranks_and_agreement_from_planted_grids():
    report = protocol_comparison.compare(QUICK, CONVERGED, draws=200)
    assert report["targets"] == ["a", "b"]
    base = {row["target"]: (row["base_quick"], row["base_converged"]) for row in report["per_target"]}
    assert base == {"a": pytest.approx((0.50, 0.60)), "b": pytest.approx((0.10, 0.80))}
    assert report["mean_base_gap_points"] == pytest.approx((10 + 70) / 2)
    gains = {row["candidate"]: (row["gain_quick"], row["gain_converged"]) for row in report["per_candidate"]}
    assert gains == {"x": pytest.approx((22.5, -0.5)), "y": pytest.approx((10.5, 1.5)),
                     "z": pytest.approx((4.0, 1.5))}
    ranks = {row["candidate"]: (row["rank_quick"], row["rank_converged"]) for row in report["per_candidate"]}
    assert ranks == {"x": (1, 3), "y": (2, 1), "z": (3, 1)}  # y and z tie under converged
    for row in report["per_candidate"]:
        for name in ("quick", "converged"):
            low, high = row[f"ci_{name}"]
            assert low <= row[f"gain_{name}"] + 1e-9 and row[f"gain_{name}"] <= high + 1e-9
    agreement = report["ranking_agreement"]
    assert agreement["spearman"] == pytest.approx(-0.866, abs=1e-3) and agreement["candidates"] == 3
    assert report["beating_base"] == {"quick": 3, "converged": 2}
    assert "Partial:** 2 targets and 16 cells" in protocol_comparison.markdown(report, complete=False)
