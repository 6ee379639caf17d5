"""``upcycle select``: which checkpoint should I start from for this dataset?

Candidates are grouped by architecture (never ranked against each other across architectures); within a
group an estimator scores each candidate cheaply, and ``verify_top`` finetunes the top K and the vanilla
base on the target to report the measured best.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..checkpoints import resolve_checkpoint
from ..errors import ConfigError
from ..protocols import Protocol
from ..specs import FinetuneResult, ProgressCallback
from ..store import Store, ZooEntry
from ..tasks import Task, load_task, overlapping
from ..zoo import default_candidates, finetune, resolve_candidate
from .context import FeatureCache, Sample, SelectionContext
from .estimate import Estimate, estimate
from .estimators import DEFAULT, DEFAULT_EXAMPLES


@dataclass(frozen=True)
class Verified:
    """A finetune run by ``--verify-top``: measured test score of starting from ``entry``."""

    entry: ZooEntry
    is_base: bool
    predicted_rank: int | None
    scores: tuple[float, ...]
    cached: bool

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores)


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

    @property
    def measured_best(self) -> Verified | None:
        return max(self.verified, key=lambda v: v.score, default=None)

    def to_dict(self) -> dict[str, Any]:
        best = self.measured_best
        return {
            "arch": self.arch, "target": self.target, "metric": self.metric,
            "base": None if self.base is None else self.base.name,
            "estimator": self.estimate.requested, "estimator_used": self.estimate.used,
            "cpu_seconds": round(self.estimate.cpu_seconds, 2),
            "amortized_cpu_seconds": round(self.estimate.amortized_seconds, 2),
            "ranking": [{"rank": i + 1, "candidate": e.name, "fingerprint": e.fingerprint,
                         "source_task": e.source_task, "score": None if math.isnan(s) else s}
                        for i, (e, s) in enumerate(self.ranking)],
            "verified": [{"candidate": v.entry.name, "is_base": v.is_base, "predicted_rank": v.predicted_rank,
                          "score": v.score, "seeds": len(v.scores)} for v in self.verified],
            "measured_best": None if best is None else best.entry.name,
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
    verify_top: int = 0,
    budget: float | None = None,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    seeds: int = 1,
    protocol: str | Protocol = "quick",
    overrides: dict[str, Any] | None = None,
    on_note: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
    **task_options: Any,
) -> list[Selection]:
    """Rank ``candidates`` (default: the zoo's finetuned checkpoints) as starting points for ``target``.

    Returns one :class:`Selection` per architecture. ``budget`` caps the CPU seconds of estimation per
    architecture (the estimator falls back to a cheaper one when it would overrun); ``verify_top`` K > 0
    finetunes the top K and the vanilla base on ``target`` under ``protocol`` with ``seeds`` seeds.
    """
    task = target if isinstance(target, Task) else load_task(target, **task_options)
    entries = [resolve_candidate(store, c) for c in candidates] if candidates else default_candidates(store)
    unique = list({entry.fingerprint: entry for entry in entries}.values())
    if not unique:
        raise ConfigError(
            "No candidates to rank: the zoo is empty. Add checkpoints with `upcycle zoo add` or "
            "`upcycle zoo build`, or pass --candidates."
        )
    if verify_top < 0 or seeds < 1 or examples < 2:
        raise ConfigError("--verify-top must be >= 0, --seeds >= 1 and --examples >= 2.")
    cache = FeatureCache(store)
    selections = []
    for arch, group in group_by_arch(unique).items():
        base = _base_of(store, group)
        group = [entry for entry in group if base is None or entry.fingerprint != base.fingerprint]
        context = SelectionContext(store=store, target=task, candidates=tuple(group),
                                   sample=Sample(n=examples, seed=seed), excluded_tasks=overlapping(task.name),
                                   seed=seed, cache=cache)
        result = estimate(estimator, context, budget=budget, on_fallback=on_note)
        ranking = sorted(group, key=lambda e: _sort_key(result.scores[e.fingerprint]), reverse=True)
        selection = Selection(arch, task.name, task.primary_metric, base,
                              tuple((e, result.scores[e.fingerprint]) for e in ranking), result)
        if verify_top:
            selection = _verify(store, selection, task, verify_top, seeds, protocol, overrides, progress)
        selections.append(selection)
    return selections


def _sort_key(score: float) -> float:
    return float("-inf") if math.isnan(score) else score  # NaN ("cannot say") last


def _verify(
    store: Store, selection: Selection, task: Task, top: int, seeds: int, protocol: str | Protocol,
    overrides: dict[str, Any] | None, progress: ProgressCallback | None,
) -> Selection:
    chosen = [(entry, rank + 1, False) for rank, (entry, _) in enumerate(selection.ranking[:top])]
    if selection.base is not None:
        chosen.append((selection.base, None, True))
    verified = []
    for entry, rank, is_base in chosen:
        runs: list[tuple[FinetuneResult, bool]] = [
            finetune(resolve_checkpoint(entry.path), task, seed=seed, protocol=protocol, overrides=overrides,
                     store=store, progress=progress)
            for seed in range(seeds)
        ]
        verified.append(Verified(entry, is_base, rank, tuple(r.score for r, _ in runs), all(c for _, c in runs)))
    return Selection(selection.arch, selection.target, selection.metric, selection.base, selection.ranking,
                     selection.estimate, tuple(verified))
