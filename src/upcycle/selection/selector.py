"""``upcycle select``: which checkpoint should I start from for this dataset?

Candidates are grouped by architecture (never ranked against each other across architectures); within a
group an estimator scores each candidate cheaply, and ``verify_top`` finetunes the top K and the vanilla
base on the target to report the measured best. The selection also predicts the top pick's gain in points over the
base, with the estimator's own gains when it predicts them (the prior, the ranker), else the prior's
(:data:`~.advice.GAIN_MODEL`), and says whether to switch at all (:mod:`.advice`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats

from ..checkpoints import Checkpoint, resolve_checkpoint
from ..errors import ConfigError
from ..protocols import Protocol, get_protocol
from ..specs import FinetuneResult, FinetuneSpec, ProgressCallback
from ..store import Store, ZooEntry
from ..tasks import Task, load_task, overlapping
from ..zoo import (
    aside_folder,
    default_candidates,
    discard_aside,
    finetune,
    promote_aside,
    refuse_unfit_save_folder,
    resolve_candidate,
)
from .advice import (
    STAY,
    GainForecast,
    Recommendation,
    auto_verify_top,
    forecast_gains,
    gain_model_estimate,
    recommend,
    register_gain_intervals,
    verifications_within_budget,
)
from .context import FeatureCache, Sample, SelectionContext
from .estimate import Estimate, estimate
from .estimators import DEFAULT, DEFAULT_EXAMPLES
from .estimators.prior import prior_gain_rows
from .estimators.ranker import ranker_gain_intervals
from .metrics import prediction_interval

# Verification finetunes are charged to --budget at the speed of stored finetunes of the same architecture on the
# same device (same protocol preferred); with none stored, at these conservative speeds, below every MiniLM arm of
# benchmarks/results/finetune_speed.json on 2 CPU cores (train 30-79, eval 123-377 examples/s).
CONSERVATIVE_TRAIN_EXAMPLES_PER_S = 25.0
CONSERVATIVE_EVAL_EXAMPLES_PER_S = 100.0


@dataclass(frozen=True)
class Verified:
    """A finetune run by ``--verify-top``: measured test score of starting from ``entry``."""

    entry: ZooEntry
    is_base: bool
    predicted_rank: int | None
    scores: tuple[float, ...]  # one per seed, in seed order
    cached: bool
    notes: tuple[str, ...] = ()  # the finetunes' caveats (small or carved test split, one-class predictions)

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores)

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% t-interval of the mean over seeds; None with one seed."""
        return mean_interval(self.scores)


def mean_interval(values: tuple[float, ...] | list[float]) -> tuple[float, float] | None:
    """95% Student-t interval of the mean of ``values`` (n,); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean, spread = float(np.mean(values)), float(np.std(values, ddof=1)) / math.sqrt(len(values))
    half = float(stats.t.ppf(0.975, len(values) - 1)) * spread
    return mean - half, mean + half


@dataclass(frozen=True)
class Kept:
    """The model ``select --save`` kept: finetuned from ``start`` on the target, saved at ``path``, in the zoo."""

    start: ZooEntry
    entry: ZooEntry
    path: str
    score: float
    notes: tuple[str, ...] = ()  # the finetune's caveats


@dataclass(frozen=True)
class Selection:
    """The answer for one architecture: candidates ranked best first, what it cost, what was verified."""

    arch: str
    target: str
    metric: str
    base: ZooEntry | None
    ranking: tuple[tuple[ZooEntry, float], ...]
    estimate: Estimate
    verified: tuple[Verified, ...] = ()
    kept: Kept | None = None
    forecasts: dict[str, GainForecast] | None = None  # {fingerprint: predicted gain}, when any is known
    verification: str | None = None  # how --verify-top's K was set (auto, or cut to fit --budget)
    gain_estimate: Estimate | None = None  # GAIN_MODEL's, when the ranking's estimator predicts only an order

    @property
    def measured_best(self) -> Verified | None:
        return max(self.verified, key=lambda v: v.score, default=None)

    @property
    def top(self) -> ZooEntry | None:
        """The top-ranked candidate that was scored."""
        return next((entry for entry, score in self.ranking if not math.isnan(score)), None)

    @property
    def predicted_gain(self) -> GainForecast | None:
        """The top pick's predicted gain over the base (points, with its 95% interval for this target); None when
        no gain is known for it."""
        top = self.top
        return None if self.forecasts is None or top is None else self.forecasts.get(top.fingerprint)

    @property
    def gain_model(self) -> str | None:
        """What predicted the gains: the ranking's estimator, or :data:`GAIN_MODEL` for it; None when nothing did."""
        if self.forecasts is None:
            return None
        return self.estimate.used if self.gain_estimate is None else self.gain_estimate.used

    @property
    def best_forecast(self) -> tuple[ZooEntry, GainForecast] | None:
        """The candidate with the highest predicted gain and its forecast, when the gains come from another
        estimator than the ranking's (else the top pick is that candidate); None when no gain is known."""
        if self.gain_estimate is None or not self.forecasts:
            return None
        known = [(entry, self.forecasts[entry.fingerprint]) for entry, _ in self.ranking
                 if entry.fingerprint in self.forecasts]
        return max(known, key=lambda pair: pair[1].gain, default=None)

    @property
    def recommendation(self) -> Recommendation:
        """Switch, stay or verify, from the predicted gains (before any verification: the measured best, when
        there is one, is what :attr:`choice` follows)."""
        top, best = self.top, self.best_forecast
        return recommend(None if top is None else top.name, None if self.base is None else self.base.name,
                         self.predicted_gain, estimator=self.gain_model or self.estimate.used,
                         best=None if best is None else (best[0].name, best[1]))

    @property
    def gain_interval(self) -> tuple[float, float] | None:
        """95% interval of the measured best's gain over the base, in points, paired by seed (2+ seeds)."""
        best = self.measured_best
        base = next((v for v in self.verified if v.is_base), None)
        if best is None or base is None or best.is_base:
            return None
        interval = mean_interval([100 * (a - b) for a, b in zip(best.scores, base.scores, strict=True)])
        return interval

    @property
    def choice(self) -> ZooEntry | None:
        """Where to start: the measured best when verified; else the vanilla base when no candidate is predicted
        to beat it; else the top-ranked candidate that was scored."""
        if self.measured_best is not None:
            return self.measured_best.entry
        if self.base is not None and self.recommendation.action == STAY:
            return self.base
        return self.top

    def to_dict(self) -> dict[str, Any]:
        best = self.measured_best
        predicted, recommendation = self.predicted_gain, self.recommendation
        return {
            "arch": self.arch, "target": self.target, "metric": self.metric,
            "base": None if self.base is None else self.base.name,
            "estimator": self.estimate.requested, "estimator_used": self.estimate.used,
            # the keys predate device-aware costs: seconds of cost_device's clock (CPU time only on the CPU)
            "cpu_seconds": round(self.estimate.seconds, 2),
            "amortized_cpu_seconds": round(self.estimate.amortized_seconds, 2),
            "cost_device": self.estimate.device,
            "ranking": [{"rank": i + 1, "candidate": e.name, "fingerprint": e.fingerprint,
                         "source_task": e.source_task, "score": None if math.isnan(s) else s}
                        for i, (e, s) in enumerate(self.ranking)],
            "verified": [{"candidate": v.entry.name, "path": v.entry.path, "is_base": v.is_base,
                          "predicted_rank": v.predicted_rank, "score": v.score, "seeds": len(v.scores),
                          "ci95": v.interval, "notes": list(v.notes)} for v in self.verified],
            "predicted_gain": None if predicted is None else predicted.gain,
            "predicted_interval": None if predicted is None or predicted.interval is None else list(predicted.interval),
            "gain_model": self.gain_model,
            "gain_model_notes": [] if self.gain_estimate is None else list(self.gain_estimate.notes),
            "recommendation": {"action": recommendation.action, "message": recommendation.message},
            "verification": self.verification,
            "measured_best": None if best is None else best.entry.name,
            "gain_ci95": self.gain_interval,
            "choice": None if self.choice is None else {"candidate": self.choice.name, "path": self.choice.path},
            "kept": None if self.kept is None else {"name": self.kept.entry.name, "path": self.kept.path,
                                                    "started_from": self.kept.start.name, "score": self.kept.score},
            "notes": list(self.estimate.notes),
        }


def group_by_arch(entries: list[ZooEntry]) -> dict[str, list[ZooEntry]]:
    groups: dict[str, list[ZooEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.arch, []).append(entry)
    return groups


def _base_of(store: Store, group: list[ZooEntry]) -> ZooEntry | None:
    """The vanilla base most of the group was finetuned from."""
    counts = Counter(entry.base_fingerprint for entry in group if entry.base_fingerprint)
    for fingerprint, _ in counts.most_common():
        base = store.get_checkpoint(fingerprint)
        if base is not None:
            return base
    return None


def select(
    store: Store,
    target: str | Task,
    *,
    candidates: list[str] | None = None,
    estimator: str = DEFAULT,
    verify_top: int | Literal["auto"] = 0,
    budget: float | None = None,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    seeds: int = 1,
    protocol: str | Protocol = "converged",
    overrides: dict[str, Any] | None = None,
    on_note: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
    save: str | Path | None = None,
    allow_pickle: bool = False,
    **task_options: Any,
) -> list[Selection]:
    """Rank ``candidates`` (default: the zoo's finetuned checkpoints) as starting points for ``target``.

    Returns one :class:`Selection` per architecture. ``budget`` caps the seconds of estimation per architecture,
    on the cost clock of the device it runs on (``$UPCYCLE_DEVICE`` or auto; CPU seconds on the CPU, wall seconds
    on an accelerator), and the estimator falls back to a cheaper one when it would overrun; ``verify_top`` K > 0
    finetunes the top K and the vanilla base on ``target`` under ``protocol`` (default ``converged``: a base trained
    to within 2 points of a long run, so the measured gain is the checkpoint's, not how fast a head is learned) with
    ``seeds`` seeds, and ``"auto"``
    picks K from the predicted-gain intervals (:func:`~.advice.auto_verify_top`). With a ``budget``, K is cut so
    that estimation and verification together fit it (:func:`verification_costs` says how a finetune is priced).
    With ``save``, the choice (the measured best; when nothing was verified, the top pick, or the base when no
    candidate is predicted to beat it) is finetuned on ``target`` (seed 0) and kept there (``save/<arch>`` when
    several architectures compete), registered in the zoo. ``allow_pickle`` lets candidates with pickle weights
    load (trusted files only).
    """
    chosen_protocol = get_protocol(protocol, overrides)  # a bad override fails here, before any work
    task = target if isinstance(target, Task) else load_task(target, **task_options)
    entries = ([resolve_candidate(store, c, allow_pickle=allow_pickle) for c in candidates] if candidates
               else default_candidates(store))
    related = overlapping(task.name)
    seen = [entry for entry in entries if entry.source_task in related]  # trained on this very data
    entries = [entry for entry in entries if entry.source_task not in related]
    unique = list({entry.fingerprint: entry for entry in entries}.values())
    if not unique:
        why = (f"every candidate was finetuned on {task.name} or data it shares ({', '.join(e.name for e in seen)})"
               if seen else "the zoo is empty")
        raise ConfigError(f"No candidates to rank: {why}. Add checkpoints with `upcycle zoo add` or "
                          "`upcycle zoo build`, or pass --candidates.")
    if (verify_top != "auto" and (not isinstance(verify_top, int) or verify_top < 0)) or seeds < 1 or examples < 2:
        raise ConfigError("--verify-top must be auto or >= 0, --seeds >= 1 and --examples >= 2.")
    cache = FeatureCache(store, allow_pickle=allow_pickle)
    groups = group_by_arch(unique)
    if save is not None:  # a folder that cannot take the result is refused now, not after the verification
        for folder in ([Path(save) / _folder_name(arch) for arch in groups] if len(groups) > 1 else [Path(save)]):
            refuse_unfit_save_folder(folder, task.fingerprint, chosen_protocol, store)
    selections = []
    for arch, group in groups.items():
        base = _base_of(store, group)
        group = [entry for entry in group if base is None or entry.fingerprint != base.fingerprint]
        context = SelectionContext(store=store, target=task, candidates=tuple(group),
                                   sample=Sample(n=examples, seed=seed), excluded_tasks=overlapping(task.name),
                                   seed=seed, cache=cache)
        result = estimate(estimator, context, budget=budget, on_fallback=on_note)
        left_out = [entry.name for entry in seen if entry.arch == arch]
        if left_out:
            result = replace(result, notes=(*result.notes, f"left out, finetuned on {task.name} or data it shares: "
                                                            f"{', '.join(left_out)}"))
        ranking = sorted(group, key=lambda e: _sort_key(result.scores[e.fingerprint]), reverse=True)
        forecasts, gains = forecast_gains(result, context), None
        if forecasts is None:  # the ranking's estimator predicts only an order: the gains are the prior's
            gains = gain_model_estimate(context)
            forecasts = (forecast_gains(gains, context) or None) if gains is not None else None
        selection = Selection(arch, task.name, task.primary_metric, base,
                              tuple((e, result.scores[e.fingerprint]) for e in ranking), result,
                              forecasts=forecasts, gain_estimate=gains if forecasts else None)
        top, selection = _plan_verification(store, selection, task, verify_top, budget, seeds, chosen_protocol,
                                            allow_pickle)
        folder = None if save is None else Path(save) / _folder_name(arch) if len(groups) > 1 else Path(save)
        if top:
            selection = _verify(store, selection, task, top, seeds, chosen_protocol, progress, allow_pickle,
                                keep=folder)
        if folder is not None and selection.choice is not None:
            selection = _keep(store, selection, task, folder, chosen_protocol, progress, allow_pickle)
        selections.append(selection)
    return selections


register_gain_intervals("ranker")(ranker_gain_intervals)  # the ranker's own residual quantiles


@register_gain_intervals("prior")
def prior_gain_intervals(context: SelectionContext, scores: dict[str, float]
                         ) -> dict[str, tuple[float, float] | None]:
    """The model prior's 95% intervals of each candidate's gain on this target: a Student-t prediction interval
    (:func:`~.metrics.prediction_interval`) from the per-target gains its score averages
    (:func:`~.estimators.prior.prior_gain_rows`: stored benches, else imported or shipped gains; the target and
    tasks sharing its data left out). Not the interval of the average gain: that one covered only 46% of held-out
    targets' gains on the published roberta-base table, this one 93% (``benchmarks/published_prior.py``). None
    for a candidate with fewer than two such targets."""
    rows = prior_gain_rows(context)
    intervals: dict[str, tuple[float, float] | None] = {}
    for fingerprint in scores:
        gains = rows[fingerprint][0].dropna().to_numpy(float) if fingerprint in rows else np.array([])
        intervals[fingerprint] = prediction_interval(gains) if len(gains) >= 2 else None
    return intervals


def verification_costs(
    store: Store, selection: Selection, task: Task, protocol: Protocol, seeds: int, allow_pickle: bool,
    *, top: int,
) -> tuple[float, list[float], str]:
    """Seconds to verify the base and each of the top ``top`` candidates (all ``seeds``), and how they were priced.

    A finetune already in the store costs nothing. Any other costs (train examples x epochs) / train speed +
    (validation examples x epochs + test examples) / eval speed, the target's splits capped as ``protocol`` caps
    them, and epochs at the protocol's most (early stopping only shortens a run). The speeds are the medians of the
    stored finetunes of checkpoints of this architecture on the estimation's device, under a protocol of the same
    name when there are any (``quick+`` names every overridden ``quick``: speeds are per example, so that is close
    enough); with none stored, the conservative ``CONSERVATIVE_*_EXAMPLES_PER_S``. Seconds are the finetunes'
    recorded (wall) seconds.
    """
    device = selection.estimate.device.split(" (")[0]
    related = [entry for entry, _ in selection.ranking] + ([selection.base] if selection.base is not None else [])
    runs = [r for entry in related for r in store.results(base_fingerprint=entry.fingerprint)
            if r.device.split(" (")[0] == device]
    same = [r for r in runs if r.protocol == protocol.name]
    measured = same or runs
    if measured:
        train_speed = float(np.median([r.train_examples_per_s for r in measured]))
        eval_speed = float(np.median([r.eval_examples_per_s for r in measured]))
        how = (f"at the median speed of {len(measured)} stored finetune(s) of this architecture on {device}"
               + (f" under protocol {protocol.name}" if same else ""))
    else:
        train_speed, eval_speed = CONSERVATIVE_TRAIN_EXAMPLES_PER_S, CONSERVATIVE_EVAL_EXAMPLES_PER_S
        how = (f"at a conservative {train_speed:g} training examples/s (no finetune of this architecture on {device} "
               "is stored)")

    def capped(split: str, limit: int | None) -> int:
        return len(task.splits[split]) if limit is None else min(len(task.splits[split]), limit)

    evaluated = capped("validation", protocol.max_eval) * protocol.epochs + capped("test", protocol.max_eval)
    one = capped("train", protocol.max_train) * protocol.epochs / train_speed + evaluated / eval_speed

    def cost(entry: ZooEntry) -> float:
        checkpoint = _named(entry, allow_pickle)
        missing = sum(not store.has_result(_result_key(checkpoint, task, protocol, seed)) for seed in range(seeds))
        return missing * one

    base = 0.0 if selection.base is None else cost(selection.base)
    return base, [cost(entry) for entry, _ in selection.ranking[:top]], how


def _plan_verification(
    store: Store, selection: Selection, task: Task, verify_top: int | Literal["auto"], budget: float | None,
    seeds: int, protocol: Protocol, allow_pickle: bool,
) -> tuple[int, Selection]:
    """K for ``--verify-top`` (``auto``: from the predicted-gain intervals), cut to fit what ``budget`` leaves after
    the estimation; the selection records how K was set, and a cut is a note."""
    if verify_top == 0:
        return 0, selection
    plan = None
    if verify_top == "auto":
        ranked = [None if selection.forecasts is None else selection.forecasts.get(entry.fingerprint)
                  for entry, _ in selection.ranking]
        k, why = auto_verify_top(ranked if selection.forecasts is not None else None)
        plan = f"--verify-top auto: {why}"
    else:
        k = min(verify_top, len(selection.ranking))
    if budget is not None and k:
        left = budget - selection.estimate.seconds
        base, candidates, how = verification_costs(store, selection, task, protocol, seeds, allow_pickle, top=k)
        fitted = verifications_within_budget(k, left=left, base_seconds=base, candidate_seconds=candidates)
        if fitted < k:
            needed = base + sum(candidates)
            done = f"verifying the top {fitted}" if fitted else "verifying nothing"
            note = (f"--budget {budget:g} s: verifying the top {k} and the base would take ~{needed:.0f} s "
                    f"(priced {how}) and {max(left, 0):.1f} s are left after the estimation, so {done}.")
            selection = replace(selection, estimate=replace(selection.estimate,
                                                            notes=(*selection.estimate.notes, note)))
            k = fitted
    return k, replace(selection, verification=plan)


def _named(entry: ZooEntry, allow_pickle: bool) -> Checkpoint:
    """The checkpoint of a zoo entry under its zoo name (results then say "minilm", not its folder's name)."""
    return replace(resolve_checkpoint(entry.path, allow_pickle=allow_pickle), name=entry.name)


def _folder_name(arch: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", arch).strip("-")


def _keep(store: Store, selection: Selection, task: Task, folder: Path, protocol: Protocol,
          progress: ProgressCallback | None, allow_pickle: bool) -> Selection:
    """Keep the selection's choice finetuned on ``task`` (seed 0, as its verification did) at ``folder``: the
    weights its verification set aside when it had to train, else a finetune that saves them there. What the
    other verifications set aside is deleted."""
    start = selection.choice
    assert start is not None
    checkpoint = _named(start, allow_pickle)
    promote_aside(store, _result_key(checkpoint, task, protocol), folder)
    discard_aside(store, folder)
    result, _ = finetune(checkpoint, task, seed=0, protocol=protocol, store=store, save=folder, progress=progress)
    assert result.checkpoint_path is not None
    entry = store.get_checkpoint(resolve_checkpoint(result.checkpoint_path).fingerprint)
    assert entry is not None, "finetune(save=...) registers what it keeps"
    return replace(selection, kept=Kept(start, entry, result.checkpoint_path, result.score, tuple(result.notes)))


def _result_key(checkpoint: Checkpoint, task: Task, protocol: Protocol, seed: int = 0) -> str:
    """The store key of ``checkpoint`` finetuned on ``task`` (seed 0: the run a verification keeps)."""
    return FinetuneSpec.create(checkpoint, task, seed=seed, protocol=protocol).key()


def _sort_key(score: float) -> float:
    return float("-inf") if math.isnan(score) else score  # NaN ("cannot say") last


def _verify(
    store: Store, selection: Selection, task: Task, top: int, seeds: int, protocol: Protocol,
    progress: ProgressCallback | None, allow_pickle: bool, *, keep: Path | None = None,
) -> Selection:
    """Finetune the top ``top`` candidates and the base on ``task`` with ``seeds`` seeds. With ``keep`` (``--save``),
    a seed-0 finetune that has to train sets its weights aside (:func:`~upcycle.zoo.aside_folder`), so that the
    one kept is not trained twice."""
    chosen = [(entry, rank + 1, False) for rank, (entry, _) in enumerate(selection.ranking[:top])]
    if selection.base is not None:
        chosen.append((selection.base, None, True))
    verified = []
    for entry, rank, is_base in chosen:
        checkpoint = _named(entry, allow_pickle)
        key = _result_key(checkpoint, task, protocol)
        aside = None if keep is None or store.has_result(key) else aside_folder(keep, key)
        runs: list[tuple[FinetuneResult, bool]] = [
            finetune(checkpoint, task, seed=seed, protocol=protocol, store=store, progress=progress,
                     save=aside if seed == 0 else None, register_saved=False)
            for seed in range(seeds)
        ]
        notes = tuple(dict.fromkeys(note for result, _ in runs for note in result.notes))
        verified.append(Verified(entry, is_base, rank, tuple(r.score for r, _ in runs), all(c for _, c in runs),
                                 notes))
    return replace(selection, verified=tuple(verified))
