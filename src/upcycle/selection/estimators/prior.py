"""Model prior: the candidate's average gain over the vanilla base on the benches already in the store.

"Where to start?" found the base model's effect largely separable from the target's: a checkpoint that
helps many targets tends to help a new one. The target's own results, and those of tasks that share its
data (``SelectionContext.excluded_tasks``), are never used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...ranking import Bench, gain_matrix, grid_frame
from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator


def stored_gains(context: SelectionContext) -> pd.DataFrame:
    """Gains in points, candidates (fingerprint rows) x targets (columns), from every bench of the candidates'
    architecture in the store, without the excluded tasks. Cells measured by several benches are averaged."""
    arches = {candidate.arch for candidate in context.candidates}
    tables = []
    for _, arch, definition in context.store.benches():
        if arch in arches:
            grid = grid_frame(Bench.model_validate_json(definition), context.store)
            tables.append(gain_matrix(grid[~grid["target"].isin(context.excluded_tasks)]).stack())
    if not tables:
        return pd.DataFrame()
    cells = pd.concat(tables)
    return cells.groupby(level=[0, 1]).mean().unstack()


@register_estimator
class ModelPrior(Estimator):
    name = "prior"
    summary = "the candidate's average gain over the base on stored benches (the target left out)"
    fallback = "semb"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        with context.meter.timed("prior:gains"):
            gains = stored_gains(context)
        result = {}
        for candidate in context.candidates:
            row = gains.loc[candidate.fingerprint] if candidate.fingerprint in gains.index else pd.Series(dtype=float)
            result[candidate.fingerprint] = float(row.mean()) if row.notna().any() else float("nan")
        if all(np.isnan(value) for value in result.values()):
            raise EstimatorUnavailable("no stored bench results for these candidates (run `upcycle bench` first)")
        return result
