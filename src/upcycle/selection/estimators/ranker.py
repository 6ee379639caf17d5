"""Learned ranker: a small ridge model, trained on the benches in the store, that predicts each candidate's gain on
the target (points over the base) from what the other estimators say about the (candidate, target) pair.

Training rows are (candidate, training target) pairs: the training targets are the targets of the stored benches
of the candidates' architecture, without the target and tasks sharing its data (``excluded_tasks``); the label is
the candidate's measured gain there. The features of a training target are the feature estimators' scores on it,
each run as if that target were new (same sample of its training data; the prior leaves that target out too, so
it never sees the column it is trained to predict). The model (:func:`upcycle.selection.ranker_model.fit_ranker`)
z-scores every feature within its target, keeps the prior also raw, chooses its ridge penalty leave-one-target-out
and takes its 95% interval from the held-out-target residuals; ``select`` prints the top pick's predicted gain
with that interval and a switch/stay recommendation.

With fewer than 3 training targets of 3 measured candidates each it cannot train, says so, and falls back to the
prior (whose own fallback is SEmb, which reads the target only). Features of the training targets are cached
like any feature and paid once for every later target, so they are charged as amortized.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import pandas as pd

from ...errors import TaskError
from ...ranking import Bench
from ...tasks import OVERLAP_GROUPS, Task, TaskRef, overlapping
from ..context import CostMeter, EstimatorUnavailable, SelectionContext
from ..ranker_model import MIN_CANDIDATES, MIN_TARGETS, RankerModel, TooLittleData, fit_ranker
from .base import ESTIMATORS, Estimator, register_estimator
from .prior import stored_gains

FEATURES = ("prior", "logme", "knn", "semb", "size")  # the default feature estimators
OPTIONAL_FEATURES = ("probe", "retrieval")  # also accepted: Ranker(features=FEATURES + OPTIONAL_FEATURES)

# the intervals of the last predictions, for the gain-interval function ``select`` calls after the estimate
_INTERVALS: OrderedDict[tuple, dict[str, tuple[float, float]]] = OrderedDict()
_KEPT = 32


def training_targets(context: SelectionContext) -> list[tuple[TaskRef, frozenset[str]]]:
    """The targets of stored benches of the candidates' architecture that are not excluded, each with the tasks
    sharing its data (under the default overlap rule and its bench's), first bench first, one per name."""
    arches = {candidate.arch for candidate in context.candidates}
    found: dict[str, tuple[TaskRef, frozenset[str]]] = {}
    for _, arch, definition in context.store.benches():
        if arch not in arches:
            continue
        bench = Bench.model_validate_json(definition)
        groups = OVERLAP_GROUPS + bench.suite.overlap_groups
        for ref in bench.targets:
            if ref.name not in context.excluded_tasks and ref.name not in found:
                found[ref.name] = (ref, overlapping(ref.name, groups))
    return list(found.values())


def feature_frame(context: SelectionContext, names: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Candidates (fingerprint rows) x feature estimators' scores on ``context``'s target, charged to its meter;
    and ``{feature: why}`` for the features that cannot score this target (left out of the frame).
    Each feature estimator's notes go to ``context``, prefixed with the feature's name."""
    columns: dict[str, dict[str, float]] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        run = replace(context, notes=[])  # same meter, cache and sample; its own notes
        try:
            columns[name] = ESTIMATORS.get(name)().scores(run)
        except EstimatorUnavailable as error:
            unavailable[name] = str(error)
            continue
        for note in run.notes:
            context.note(f"ranker feature {name}: {note.removeprefix(f'{name}: ')}")
    index = [candidate.fingerprint for candidate in context.candidates]
    return pd.DataFrame(columns, index=index, dtype=float), unavailable


def _interval_key(context: SelectionContext, scores: dict[str, float]) -> tuple:
    return (context.target.fingerprint, context.sample.key, tuple(sorted(scores.items())))


@register_estimator
class Ranker(Estimator):
    name = "ranker"
    summary = ("ridge model trained on the stored benches (the target left out): predicts each candidate's gain "
               f"from {', '.join(FEATURES)}")
    fallback = "prior"

    def __init__(self, features: tuple[str, ...] = FEATURES):
        self.features = features

    def scores(self, context: SelectionContext) -> dict[str, float]:
        wanted = {candidate.fingerprint for candidate in context.candidates}
        with context.meter.timed("ranker:gains"):
            gains = stored_gains(context)
        gains = gains[gains.index.isin(wanted)] if len(gains) else gains
        targets = [(ref, related) for ref, related in training_targets(context)
                   if ref.name in gains.columns and gains[ref.name].notna().sum() >= MIN_CANDIDATES]
        if len(targets) < MIN_TARGETS:
            raise EstimatorUnavailable(
                f"too little to train on ({len(targets)} stored target{'' if len(targets) == 1 else 's'} with >= "
                f"{MIN_CANDIDATES} measured candidates "
                f"once the target and tasks sharing its data are left out; it needs {MIN_TARGETS})")

        current, unavailable = feature_frame(context, self.features)
        for name, why in unavailable.items():
            context.note(f"ranker: feature {name} left out ({why}).")
        kept = tuple(name for name in self.features if name in current.columns)
        if not kept:
            raise EstimatorUnavailable("none of its features can score this target")

        rows, labels, groups, used, skipped = [], [], [], [], []
        for ref, related in targets:
            measured = gains[ref.name].dropna()
            candidates = tuple(c for c in context.candidates if c.fingerprint in measured.index)
            try:
                task: Task = ref.load()
            except TaskError as error:
                skipped.append(f"{ref.name} ({error})")
                continue
            meter = CostMeter(device=context.meter.device)
            training = replace(context, target=task, candidates=candidates, notes=[], meter=meter,
                               excluded_tasks=context.excluded_tasks | related)
            frame, _ = feature_frame(training, kept)  # its meter has no limit: the budget caps the target's work
            for key, seconds in (meter.charges | meter.amortized).items():
                context.meter.charge(f"ranker:{ref.name}:{key}", seconds, amortized=True)
            frame = frame.reindex(columns=list(kept))
            rows.append(frame.set_axis([(f, ref.name) for f in frame.index]))
            labels.extend(measured.loc[frame.index].tolist())
            groups.extend([ref.name] * len(frame))
            used.append(ref.name)
        if skipped:
            context.note(f"ranker: training targets whose data cannot be loaded, skipped: {'; '.join(skipped)}.")
        if not rows:
            raise EstimatorUnavailable("too little to train on (no training target could be loaded)")
        features = pd.concat(rows)
        with context.meter.timed("ranker:fit"):
            try:
                model = fit_ranker(features, pd.Series(labels, index=features.index), groups)
            except TooLittleData as error:
                raise EstimatorUnavailable(str(error)) from None
            predicted = model.predict(current)
        context.note(describe(model, used))
        result = {fingerprint: float(value) for fingerprint, value in predicted["gain"].items()}
        intervals = {fingerprint: (float(row.low), float(row.high)) for fingerprint, row in predicted.iterrows()}
        _INTERVALS[_interval_key(context, result)] = intervals
        while len(_INTERVALS) > _KEPT:
            _INTERVALS.popitem(last=False)
        return result


def describe(model: RankerModel, targets: list[str]) -> str:
    """The note that says what the ranker learned from."""
    weights = ", ".join(f"{name} {value:+.2f}" for name, value in zip(model.columns, model.coef))
    return (f"ranker: trained on {model.pairs} (candidate, target) pairs of {model.targets} stored targets "
            f"({', '.join(targets)}; the target and tasks sharing its data left out), features "
            f"{', '.join(model.features)}; ridge alpha {model.alpha:g} chosen leave-one-target-out (held-out RMSE "
            f"{model.cv_rmse:.2f} points); 95% interval = prediction {model.low:+.2f} to {model.high:+.2f} points; "
            f"weights in points per standard deviation of each column ({weights}; name:raw = the raw level).")


def ranker_gain_intervals(context: SelectionContext, scores: dict[str, float]
                          ) -> dict[str, tuple[float, float] | None]:
    """The ranker's 95% intervals of the predicted gains ``scores``: prediction plus the held-out-target residual
    quantiles of the model that made them (refitted, from cached features, if this process has not kept them)."""
    key = _interval_key(context, scores)
    if key not in _INTERVALS:
        try:
            Ranker().scores(replace(context, notes=[], meter=CostMeter(device=context.meter.device)))
        except EstimatorUnavailable:
            pass
    kept = _INTERVALS.get(key, {})
    return {fingerprint: kept.get(fingerprint) for fingerprint in scores}
