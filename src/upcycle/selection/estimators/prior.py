"""Model prior: the candidate's average gain over the vanilla base, from benches in the store or from imported
leaderboards.

"Where to start?" found the base model's effect largely separable from the target's: a checkpoint that
helps many targets tends to help a new one. The target's own results, and those of tasks that share its
data (``SelectionContext.excluded_tasks``), are never used.

Where the gains come from, per candidate, in this order (the first that has any gain outside the excluded tasks):

1. benches in the store (what this machine measured: :func:`stored_gains`);
2. gains files imported into the store (``upcycle leaderboard import``: another store's export, or a published
   model-recycling table), the latest import first;
3. the gains shipped with upcycle (the committed MiniLM grid: ``upcycle/data/minilm_recycling_gains.json``).

An imported candidate is matched to a zoo entry by fingerprint, else by hub id or, with the same recorded base,
by name (:func:`upcycle.ranking.gainsfile.match_candidate`); the notes say which source and rule served whom.
"""

from __future__ import annotations

import pandas as pd

from ...ranking import Bench, gain_matrix, grid_frame
from ...ranking.gainsfile import gain_sources, match_candidate
from ...store import ZooEntry
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


def imported_gains(context: SelectionContext, candidates: tuple[ZooEntry, ...] | None = None
                   ) -> dict[str, tuple[pd.Series, str, str]]:
    """``{fingerprint: (gains in points by target, the source's label, how it was matched)}`` for the candidates
    (default: all of the context's) that an imported or shipped gains set knows, without the excluded tasks.
    The first source (in :func:`gain_sources` order) with a gain outside the excluded tasks serves a candidate."""
    wanted = context.candidates if candidates is None else candidates
    if not wanted:
        return {}
    found: dict[str, tuple[pd.Series, str, str]] = {}
    for source in gain_sources(context.store, {c.arch for c in wanted}):
        for entry in wanted:
            if entry.fingerprint in found:
                continue
            match = match_candidate(entry, source.gain_set)
            if match is None:
                continue
            candidate, how = match
            gains = pd.Series(candidate.gains, dtype=float)
            gains = gains[~gains.index.isin(context.excluded_tasks)]
            if len(gains):
                found[entry.fingerprint] = (gains, source.label, how)
    return found


STORED = "stored benches"


def prior_gain_rows(context: SelectionContext) -> dict[str, tuple[pd.Series, str, str]]:
    """What the prior averages, per candidate: ``{fingerprint: (gains in points by target, source, match)}``, from
    the stored benches (source :data:`STORED`, match ``fingerprint``) where they hold any gain outside the excluded
    tasks, else from :func:`imported_gains`. Candidates with no gain anywhere are absent. The prior's score is the
    mean of the row; a bootstrap over its targets gives the score's interval."""
    gains = stored_gains(context)
    rows: dict[str, tuple[pd.Series, str, str]] = {}
    for candidate in context.candidates:
        row = gains.loc[candidate.fingerprint].dropna() if candidate.fingerprint in gains.index else None
        if row is not None and len(row):
            rows[candidate.fingerprint] = (row, STORED, "fingerprint")
    others = tuple(c for c in context.candidates if c.fingerprint not in rows)
    return rows | imported_gains(context, others)


@register_estimator
class ModelPrior(Estimator):
    name = "prior"
    summary = ("the candidate's average gain over the base on stored benches, else on imported or shipped "
               "leaderboards (the target left out)")
    fallback = "semb"
    reads_sample = False

    def scores(self, context: SelectionContext) -> dict[str, float]:
        with context.meter.timed("prior:gains"):
            rows = prior_gain_rows(context)
        result = {c.fingerprint: float(rows[c.fingerprint][0].mean()) if c.fingerprint in rows else float("nan")
                  for c in context.candidates}
        if not rows:
            raise EstimatorUnavailable("no stored bench results for these candidates (run `upcycle bench` first), "
                                       "and no imported leaderboard knows them (`upcycle leaderboard import`)")
        served: dict[tuple[str, str], list[str]] = {}
        for candidate in context.candidates:
            if candidate.fingerprint in rows and rows[candidate.fingerprint][1] != STORED:
                values, label, how = rows[candidate.fingerprint]
                served.setdefault((label, how), []).append(f"{candidate.name} ({len(values)} targets)")
        for (label, how), names in served.items():
            context.note(f"prior: gains of {', '.join(names)} from the {label}, matched by {how}"
                         + ("" if how == "fingerprint" else "; measured on checkpoints of that identity, not on "
                            "these weights") + ".")
        measured = sum(1 for row in rows.values() if row[1] == STORED)
        if served and measured:
            context.note(f"prior: {measured} candidates scored from stored benches and {sum(map(len, served.values()))}"
                         " from imported gains: averages over different targets and protocols, compare with care.")
        unknown = [c.name for c in context.candidates if c.fingerprint not in rows]
        if unknown:
            context.note(f"prior: no gains known for {', '.join(unknown)}; the prior ranks them last.")
        return result
