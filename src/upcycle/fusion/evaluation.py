"""Fused bases judged as starting points: finetuned on held-out targets, gain over the vanilla base.

Every evaluated iteration is a candidate of one bench (``fusion-<run name>``) in the store, so the scores
land in the same results table as every other finetune, reruns train only missing cells, and the fused
bases appear in the leaderboard next to the rest of the zoo.
"""

from __future__ import annotations

from collections.abc import Callable

from ..execute import Executor
from ..ranking import Bench, expected_cells, grid_frame, plan_bench, run_bench, summarize
from ..specs import FinetuneResult
from ..store import Store
from ..tasks import Suite
from .loop import FusionState


def fusion_bench(state: FusionState, store: Store, candidates: list[str]) -> Bench:
    """The run's bench over ``candidates`` (checkpoint paths) on its held-out targets (saved in the store)."""
    config = state.config
    return plan_bench(store, base=config.base.reference, suite=Suite(f"fusion-{config.name}", config.eval_targets),
                      seeds=config.eval_seeds, protocol=config.eval_protocol, candidates=candidates,
                      name=f"fusion-{config.name}")


def bench_evaluator(store: Store, executor: Executor | None = None,
                    on_result: Callable[[FinetuneResult, int, int], None] | None = None):
    """``evaluate(state, iteration) -> (avg gain, CI low, CI high)`` for :func:`~upcycle.fusion.run_fusion`.

    The bench holds every iteration evaluated so far; only cells not stored yet are trained.
    """

    def evaluate(state: FusionState, iteration: int) -> tuple[float, float, float]:
        evaluated = [r for r in state.iterations
                     if r.iteration == iteration or r.avg_gain is not None]
        bench = fusion_bench(state, store, [r.fused_path for r in evaluated])
        for result, done, total in run_bench(bench, store, executor):
            if on_result is not None:
                on_result(result, done, total)
        summary = summarize(grid_frame(bench, store), expected_cells(bench))
        fingerprint = next(r.fused_fingerprint for r in evaluated if r.iteration == iteration)
        row = summary[summary["fingerprint"] == fingerprint].iloc[0]
        return float(row["avg_gain"]), float(row["ci_low"]), float(row["ci_high"])

    return evaluate
