"""Ranking (model recycling): the bench grid, gains over the vanilla base, the study's analyses and the
leaderboard rows."""

from .bench import (
    Bench,
    Candidate,
    benches_from_results,
    expected_cells,
    grid_frame,
    load_bench,
    plan_bench,
    run_bench,
)
from .gains import gain_matrix, summarize
from .leaderboard import Leaderboard, build_leaderboard

__all__ = ["Bench", "Candidate", "Leaderboard", "benches_from_results", "build_leaderboard", "expected_cells",
           "gain_matrix", "grid_frame", "load_bench", "plan_bench", "run_bench", "summarize"]
