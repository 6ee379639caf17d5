"""Gains over the vanilla base, with bootstrap intervals and integrity checks: pure functions of a grid.

The grid is a tidy frame with one row per (candidate, target, seed) (see ``bench.GRID_COLUMNS``). Scores
are on the metric's own scale (accuracy, Spearman); gains are reported in points (x100).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRIC_RANGES = {"accuracy": (0.0, 1.0), "spearman": (-1.0, 1.0)}
SUMMARY_COLUMNS = [
    "candidate", "fingerprint", "source_task", "avg_gain", "ci_low", "ci_high", "wins", "losses", "worst_loss",
    "targets", "fully_tested",
]


def scores_by_target(cells: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{target: scores over seeds}`` of some grid rows (one candidate's, or the base's)."""
    return {target: rows["score"].to_numpy(float) for target, rows in cells.groupby("target")}


def baseline_scores(grid: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{target: base scores over seeds}``."""
    return scores_by_target(grid[grid["is_base"]])


def gain_matrix(grid: pd.DataFrame) -> pd.DataFrame:
    """Mean gain in points, candidates (rows, by fingerprint) x targets (columns); NaN where not measured.

    Gain = candidate score minus the base's mean score over seeds, on the same target.
    """
    base = grid[grid["is_base"]].groupby("target")["score"].mean()
    others = grid[~grid["is_base"] & grid["target"].isin(base.index)]
    if others.empty:  # nothing to compare (an empty grid, or no target where the base was measured)
        return pd.DataFrame(index=pd.Index([], name="fingerprint"), columns=pd.Index([], name="target"), dtype=float)
    gains = (others["score"] - others["target"].map(base)) * 100
    table = others.assign(gain=gains).pivot_table(index="fingerprint", columns="target", values="gain", aggfunc="mean")
    return table.reindex(columns=sorted(table.columns))


def bootstrap_gain_interval(
    candidate: dict[str, np.ndarray], base: dict[str, np.ndarray], *, draws: int = 2000, level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the average gain (points), resampling targets and, within each, seeds.

    Args:
        candidate: ``{target: scores over seeds}`` for one candidate.
        base: the same for the vanilla base (its seeds are resampled too: the baseline is an estimate).
    """
    rng = np.random.default_rng(seed)
    targets = sorted(candidate)
    per_target = np.empty((len(targets), draws))  # (T, B): a bootstrap draw of each target's gain
    for row, target in enumerate(targets):
        own, ref = candidate[target], base[target]
        own_means = own[rng.integers(0, len(own), (draws, len(own)))].mean(axis=1)
        ref_means = ref[rng.integers(0, len(ref), (draws, len(ref)))].mean(axis=1)
        per_target[row] = (own_means - ref_means) * 100
    picks = rng.integers(0, len(targets), (draws, len(targets)))  # (B, T): targets resampled per draw
    averages = per_target[picks, np.arange(draws)[:, None]].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(averages, [tail, 100 - tail])
    return float(low), float(high)


def summarize(grid: pd.DataFrame, expected: dict[str, set[tuple[str, int]]], *, draws: int = 2000) -> pd.DataFrame:
    """One row per candidate (the base excluded), best average gain first; columns ``SUMMARY_COLUMNS``.

    ``expected`` maps a fingerprint to the (target, seed) cells it should have. A candidate is fully tested
    when it and the base have all of them.
    """
    base = baseline_scores(grid)
    gains = gain_matrix(grid)
    base_rows = grid[grid["is_base"]]
    base_cells = set(zip(base_rows["target"], base_rows["seed"]))
    rows = []
    for fingerprint, own in grid[~grid["is_base"]].groupby("fingerprint"):
        measured = {t: scores for t, scores in scores_by_target(own).items() if t in base}
        if not measured:
            continue
        per_target = gains.loc[fingerprint].dropna()
        low, high = bootstrap_gain_interval(measured, base, draws=draws)
        need = expected.get(fingerprint, set())
        full = need <= set(zip(own["target"], own["seed"])) and need <= base_cells
        first = own.iloc[0]
        rows.append((first["candidate"], fingerprint, first["source_task"], float(per_target.mean()), low, high,
                     int((per_target > 0).sum()), int((per_target < 0).sum()), float(per_target.min()),
                     len(per_target), bool(full)))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return summary.sort_values("avg_gain", ascending=False, ignore_index=True)


def integrity_problems(grid: pd.DataFrame) -> list[str]:
    """Human-readable problems: duplicated cells, scores outside the metric's range, identical score vectors."""
    problems = []
    duplicated = grid[grid.duplicated(["fingerprint", "target", "seed"], keep=False)]
    for (name, target, seed), _ in duplicated.groupby(["candidate", "target", "seed"]):
        problems.append(f"{name} has several scores for {target} seed {seed}")
    for row in grid.itertuples():
        low, high = METRIC_RANGES.get(row.metric, (-np.inf, np.inf))
        if not (low <= row.score <= high):  # also catches NaN
            problems.append(f"{row.candidate} on {row.target} seed {row.seed}: {row.metric} {row.score} is impossible")
    vectors: dict[tuple, list[str]] = {}
    for (fingerprint, name), own in grid.groupby(["fingerprint", "candidate"]):
        if len(own) > 1:
            vector = tuple(own.sort_values(["target", "seed"])[["target", "seed", "score"]].itertuples(index=False))
            vectors.setdefault(vector, []).append(name)
    for names in vectors.values():
        if len(names) > 1:
            problems.append(f"identical scores on every cell for {', '.join(sorted(names))} (same model twice?)")
    return problems
