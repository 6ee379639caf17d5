"""The committed MiniLM grid under two protocols: what the quick protocol's undertrained base did to the gains.

Issue 17, item 2: the same 12 experts and vanilla MiniLM on the same 10 targets and seeds, finetuned under
``quick+`` (1000 examples, 2 epochs) and under the ``converged`` protocol (chosen by
``benchmarks/base_convergence.py``: the vanilla base within 2 points of a long reference). Reported:

* per target, the vanilla base's mean score under each protocol, and the candidates' mean gain under each;
* per candidate, the average gain over targets with its 95% bootstrap interval (targets and seeds resampled,
  as the leaderboard computes it) and its rank under each protocol;
* the Spearman correlation of the two candidate rankings, with a 95% interval from resampling targets (both
  rankings recomputed on each draw), and how many candidates beat the base under each.

Only (candidate, target, seed) cells measured under both protocols are compared, so a grid still running gives a
partial table that says how many targets and cells it covers.

    .venv/bin/python benchmarks/protocol_comparison.py    # the committed quick grid vs recycling_minilm_converged.csv

writes ``benchmarks/results/protocol_comparison.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from upcycle.ranking.gains import bootstrap_gain_interval, gain_matrix, scores_by_target
from upcycle.report import write_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASE = "minilm"  # the vanilla base's row name in the grid CSVs (benchmarks/recycling_minilm.sh)


def load_grid(path: Path) -> pd.DataFrame:
    """A committed grid CSV (candidate, fingerprint, target, seed, metric, score) with ``is_base`` added."""
    cells = pd.read_csv(path)
    return cells.assign(is_base=cells["candidate"] == BASE)


def shared_cells(quick: pd.DataFrame, converged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both grids cut to the targets where both measured the base and to the (candidate, target, seed) cells both
    measured, so every comparison is like for like (a grid still running may hold one seed of a cell)."""
    targets = sorted(set(quick.loc[quick["is_base"], "target"]) & set(converged.loc[converged["is_base"], "target"]))
    key = ["candidate", "target", "seed"]
    both = set(quick[key].itertuples(index=False, name=None)) & set(converged[key].itertuples(index=False, name=None))

    def cut(cells: pd.DataFrame) -> pd.DataFrame:
        paired = pd.Series([cell in both for cell in cells[key].itertuples(index=False, name=None)], index=cells.index)
        keep = cells["target"].isin(targets) & paired
        return cells[keep].reset_index(drop=True)

    return cut(quick), cut(converged)


def candidate_gains(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean gain (points) per candidate name x target; the base excluded."""
    names = cells.drop_duplicates("fingerprint").set_index("fingerprint")["candidate"]
    gains = gain_matrix(cells)
    return gains.set_axis(names.reindex(gains.index).to_numpy(), axis=0).sort_index()


def ranking_agreement(quick: pd.DataFrame, converged: pd.DataFrame, *, draws: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Spearman correlation of the candidates' average gains under the two protocols, and its percentile interval
    from resampling targets (the same draw for both grids: gains are candidates x targets, same rows and
    columns)."""
    rng = np.random.default_rng(seed)
    shared = quick.index.intersection(converged.index)
    quick, converged = quick.loc[shared], converged.loc[shared, quick.columns]
    point = stats.spearmanr(quick.mean(axis=1), converged.mean(axis=1)).statistic
    columns = np.arange(quick.shape[1])
    draws_rho = []
    for _ in range(draws):
        pick = rng.choice(columns, size=len(columns), replace=True)
        rho = stats.spearmanr(quick.iloc[:, pick].mean(axis=1), converged.iloc[:, pick].mean(axis=1)).statistic
        if np.isfinite(rho):
            draws_rho.append(rho)
    low, high = np.percentile(draws_rho, [2.5, 97.5]) if draws_rho else (np.nan, np.nan)
    return {"spearman": float(point), "ci95": [float(low), float(high)], "candidates": len(shared),
            "targets": int(quick.shape[1])}


def compare(quick: pd.DataFrame, converged: pd.DataFrame, *, draws: int = 2000) -> dict[str, Any]:
    """Everything the report holds, from the two grids (tidy frames with ``is_base``)."""
    quick, converged = shared_cells(quick, converged)
    grids = {"quick": quick, "converged": converged}
    gains = {name: candidate_gains(cells) for name, cells in grids.items()}
    targets = list(gains["quick"].columns)
    base = {name: {t: float(s.mean()) for t, s in scores_by_target(cells[cells["is_base"]]).items()}
            for name, cells in grids.items()}
    per_target = [{"target": t, "metric": str(quick.loc[quick["target"] == t, "metric"].iloc[0]),
                   **{f"base_{name}": base[name][t] for name in grids},
                   **{f"mean_gain_{name}": float(gains[name][t].mean()) for name in grids}} for t in targets]
    base_scores = {name: scores_by_target(cells[cells["is_base"]]) for name, cells in grids.items()}
    averages = {name: table.mean(axis=1) for name, table in gains.items()}
    ranks = {name: average.rank(ascending=False, method="min") for name, average in averages.items()}
    per_candidate = []
    for candidate in gains["quick"].index:
        row: dict[str, Any] = {"candidate": candidate}
        for name, cells in grids.items():
            own = scores_by_target(cells[cells["candidate"] == candidate])
            low, high = bootstrap_gain_interval(own, base_scores[name], draws=draws)
            row |= {f"gain_{name}": float(averages[name][candidate]), f"ci_{name}": [low, high],
                    f"rank_{name}": int(ranks[name][candidate])}
        per_candidate.append(row)
    per_candidate.sort(key=lambda row: row["rank_converged"])
    return {
        "targets": targets,
        "cells": len(converged),
        "per_target": per_target,
        "per_candidate": per_candidate,
        "ranking_agreement": ranking_agreement(gains["quick"], gains["converged"], draws=draws),
        "beating_base": {name: int((average > 0).sum()) for name, average in averages.items()},
        "mean_base_gap_points": float(np.mean([100 * (row["base_converged"] - row["base_quick"])
                                               for row in per_target])),
    }


def markdown(report: dict[str, Any], complete: bool,
             command: str = ".venv/bin/python benchmarks/protocol_comparison.py") -> str:
    agree = report["ranking_agreement"]
    lines = [
        "# Quick vs converged protocol: the committed MiniLM grid (issue 17)",
        "",
        ("" if complete else f"**Partial:** {len(report['targets'])} targets and {report['cells']} cells measured "
         "under both protocols so far. ")
        + "Gains in points over the vanilla base under the same protocol; intervals are 95% bootstrap intervals "
        f"(targets and seeds resampled). Regenerate with `{command}`.",
        "",
        "## The vanilla base",
        "",
        "| target | metric | base, quick | base, converged | mean gain over candidates, quick | ..., converged |",
        "|---|---|---|---|---|---|",
        *(f"| {r['target']} | {r['metric']} | {r['base_quick']:.3f} | {r['base_converged']:.3f} | "
          f"{r['mean_gain_quick']:+.1f} | {r['mean_gain_converged']:+.1f} |" for r in report["per_target"]),
        "",
        f"The converged protocol's base is {report['mean_base_gap_points']:+.1f} points above the quick one's on "
        "average.",
        "",
        "## The candidates",
        "",
        "| candidate | gain, quick [95% CI] | rank | gain, converged [95% CI] | rank |",
        "|---|---|---|---|---|",
        *(f"| {r['candidate']} | {r['gain_quick']:+.1f} [{r['ci_quick'][0]:+.1f}, {r['ci_quick'][1]:+.1f}] | "
          f"{r['rank_quick']} | {r['gain_converged']:+.1f} [{r['ci_converged'][0]:+.1f}, "
          f"{r['ci_converged'][1]:+.1f}] | {r['rank_converged']} |" for r in report["per_candidate"]),
        "",
        f"Spearman between the two rankings: {agree['spearman']:.2f} [{agree['ci95'][0]:.2f}, {agree['ci95'][1]:.2f}] "
        f"({agree['candidates']} candidates, {agree['targets']} targets; the interval resamples targets). "
        f"Candidates with a positive average gain: {report['beating_base']['quick']} under quick, "
        f"{report['beating_base']['converged']} under converged.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", type=Path, default=RESULTS / "recycling_minilm.csv")
    parser.add_argument("--converged", type=Path, default=RESULTS / "recycling_minilm_converged.csv",
                        help="written by PROTOCOL=converged bash benchmarks/recycling_minilm.sh")
    parser.add_argument("--out", type=Path, default=RESULTS / "protocol_comparison")
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    quick, converged = load_grid(args.quick), load_grid(args.converged)
    report = compare(quick, converged, draws=args.draws)
    complete = set(report["targets"]) == set(quick["target"]) and len(converged) == len(quick)
    report |= {"complete": complete, "sources": {name: os.path.relpath(path.resolve(), ROOT)
                                                 for name, path in (("quick", args.quick),
                                                                    ("converged", args.converged))}}
    write_atomic(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    command = " ".join([".venv/bin/python benchmarks/protocol_comparison.py", *sys.argv[1:]])
    text = markdown(report, complete, command)
    write_atomic(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
