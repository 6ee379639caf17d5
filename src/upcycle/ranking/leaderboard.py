"""A bench's leaderboard as typed rows: the vanilla base first, then candidates by average gain.

Everything here is computed from the store's contents for one bench; nothing is trained. Renderers (table,
Markdown, CSV, JSON) live in :mod:`upcycle.report.leaderboard`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..store import Store
from .bench import Bench, expected_cells, grid_frame
from .gains import gain_matrix, integrity_problems, summarize

EXCLUDED = "overlap"  # a per-task cell left out because the candidate was trained on overlapping data


@dataclass(frozen=True)
class LeaderboardRow:
    """One row. The vanilla base has ``rank`` None and ``values`` its absolute mean score per target (x100); a
    candidate has ``values`` its gain per target in points, :data:`EXCLUDED` where its source data overlaps the
    target and None where the target is not trained yet. Gains are rounded to 2 decimals."""

    rank: int | None
    candidate: str
    source_task: str | None
    fingerprint: str
    avg_gain: float
    ci_low: float | None
    ci_high: float | None
    wins: int | None
    losses: int | None
    worst_loss: float | None
    fully_tested: bool
    values: Mapping[str, float | str | None]

    @property
    def is_base(self) -> bool:
        return self.rank is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout: the fields in order, then ``scores`` (the base) or ``gains`` (a candidate)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "values"}
        return fields | {"scores" if self.is_base else "gains": dict(self.values)}


@dataclass(frozen=True)
class Leaderboard:
    """A bench's ranking. ``rows[0]`` is the vanilla base (absolute scores); then candidates by average gain."""

    bench: Bench
    rows: list[LeaderboardRow]
    targets: list[str]
    problems: list[str]
    cells_done: int
    cells_total: int


def build_leaderboard(bench: Bench, store: Store, *, draws: int = 2000) -> Leaderboard:
    grid = grid_frame(bench, store)
    expected = expected_cells(bench)
    rows = [_base_row(bench, grid)]
    if grid["is_base"].any() and (~grid["is_base"]).any():
        rows += _candidate_rows(bench, grid, expected, draws)
    total = sum(len(cells) for cells in expected.values())
    return Leaderboard(bench, rows, [t.name for t in bench.targets], integrity_problems(grid), len(grid), total)


def _base_row(bench: Bench, grid: pd.DataFrame) -> LeaderboardRow:
    """The vanilla base: its absolute mean score per target (x100), and whether every seed is there."""
    scores = grid[grid["is_base"]].groupby("target")["score"].agg(["mean", "count"])
    complete = all(t.name in scores.index and scores.loc[t.name, "count"] == len(bench.seeds) for t in bench.targets)
    return LeaderboardRow(
        rank=None, candidate=f"{bench.base.checkpoint.name} (vanilla base)", source_task=None,
        fingerprint=bench.base.checkpoint.fingerprint, avg_gain=0.0, ci_low=None, ci_high=None, wins=None,
        losses=None, worst_loss=None, fully_tested=complete,
        values={t.name: round(scores.loc[t.name, "mean"] * 100, 2) if t.name in scores.index else None
                for t in bench.targets},
    )


def _candidate_rows(
    bench: Bench, grid: pd.DataFrame, expected: dict[str, set[tuple[str, int]]], draws: int
) -> list[LeaderboardRow]:
    """Candidates by average gain; per-target gains, ``EXCLUDED`` for overlaps and None where not trained yet."""
    summary = summarize(grid, expected, draws=draws)
    gains = gain_matrix(grid)
    sources = {c.checkpoint.fingerprint: c.source_task for c in bench.candidates}
    rows = []
    for rank, item in enumerate(summary.itertuples(), start=1):
        per_task: dict[str, Any] = {}
        for target in (t.name for t in bench.targets):
            value = gains.loc[item.fingerprint].get(target, math.nan)
            if bench.suite.overlaps(sources.get(item.fingerprint), target):
                per_task[target] = EXCLUDED
            else:
                per_task[target] = None if pd.isna(value) else round(float(value), 2)
        rows.append(LeaderboardRow(
            rank=rank, candidate=item.candidate, source_task=sources.get(item.fingerprint),
            fingerprint=item.fingerprint, avg_gain=round(item.avg_gain, 2), ci_low=round(item.ci_low, 2),
            ci_high=round(item.ci_high, 2), wins=item.wins, losses=item.losses,
            worst_loss=round(item.worst_loss, 2), fully_tested=item.fully_tested, values=per_task,
        ))
    return rows
