"""What every selection estimator shares: the context it reads, the registry, and how it is run.

An estimator scores each candidate checkpoint for one target task: higher means "a better place to start
finetuning from". It never finetunes the candidates on the full target (that is the brute force it
replaces) and reports what it spent, in CPU seconds, through the context's :class:`CostMeter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar

import numpy as np

from ..errors import UpcycleError
from ..features import BudgetExhausted, CostMeter, FeatureCache, Sample, TaskSource
from ..store import Store, ZooEntry
from ..tasks import Split, Task, load_task


class EstimatorUnavailable(UpcycleError):
    """This estimator cannot score this target (too few examples, no source data, no bench results...)."""


@dataclass
class SelectionContext:
    """Everything an estimator may read about one target and its candidates (all of one architecture).

    ``excluded_tasks`` are task names whose results must not inform the estimate: the target itself and
    tasks that share its data. Leave-one-target-out evaluation relies on it to keep the target out.
    """

    store: Store
    target: Task
    candidates: tuple[ZooEntry, ...]
    sample: Sample = field(default_factory=Sample)
    excluded_tasks: frozenset[str] = frozenset()
    seed: int = 0
    meter: CostMeter = field(default_factory=CostMeter)
    notes: list[str] = field(default_factory=list)
    cache: FeatureCache | None = None

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = FeatureCache(self.store)

    @cached_property
    def target_source(self) -> TaskSource:
        return TaskSource.of(self.target)

    @cached_property
    def target_split(self) -> Split:
        """The target sample the estimators read: (n,) texts and labels."""
        return self.sample.take(self.target)

    @cached_property
    def target_labels(self) -> np.ndarray:
        return np.asarray(self.target_split.labels)

    @cached_property
    def embedder(self) -> ZooEntry:
        """all-MiniLM-L6-v2, the fixed sentence encoder of SEmb and Retrieval of Experts (any architecture).

        Not registered in the zoo: it is a measuring instrument here, not a candidate.
        """
        from ..checkpoints import resolve_checkpoint

        minilm = resolve_checkpoint("minilm")
        return ZooEntry(minilm.fingerprint, "all-MiniLM-L6-v2", str(minilm.path), str(minilm.arch),
                        minilm.arch.model_type, None, None, "")

    @property
    def regression(self) -> bool:
        return self.target.kind == "regression"

    def target_features(self, candidate: ZooEntry) -> np.ndarray:
        """(n, hidden) mean-pooled features of the target sample through ``candidate``."""
        assert self.cache is not None
        return self.cache.pooled(candidate, self.target_source, self.sample, self.meter)

    def score_features(self, label: str, fit: Callable[[np.ndarray], float]) -> dict[str, float]:
        """``{fingerprint: fit(target features (n, hidden))}`` over the candidates; each fit is timed as the
        estimator's own work under ``label``."""
        result = {}
        for candidate in self.candidates:
            features = self.target_features(candidate)
            with self.meter.timed(f"{label}:{candidate.fingerprint}"):
                result[candidate.fingerprint] = fit(features)
        return result

    def source_of(self, candidate: ZooEntry) -> TaskSource | None:
        """The task ``candidate`` was finetuned on, from its lineage; None when unknown."""
        if candidate.source_task is None:
            return None
        provenance = self.store.provenance(candidate.fingerprint)
        fingerprint = provenance.get("task_fingerprint")
        recorded = self.store.task_source(fingerprint) if fingerprint else None
        where = recorded or candidate.source_task

        def load() -> Task:
            task = load_task(where)
            if fingerprint and task.fingerprint != fingerprint:
                raise EstimatorUnavailable(f"{where}: the source data of {candidate.name} changed since it was trained.")
            return task

        return TaskSource(fingerprint or f"name:{candidate.source_task}", candidate.source_task, load)

    def source_features(self, candidate: ZooEntry, through: ZooEntry, n: int = 100) -> np.ndarray | None:
        """(n, hidden) features of ``n`` examples of ``candidate``'s source data through ``through``'s encoder.

        Paid once per candidate and reused for every target, so charged as amortized. None when the source
        task is unknown or cannot be loaded (noted).
        """
        source = self.source_of(candidate)
        if source is None:
            self.note(f"{candidate.name}: no source task in its lineage; source-data estimators skip it.")
            return None
        assert self.cache is not None
        try:
            return self.cache.pooled(through, source, Sample(n=n, seed=self.seed), self.meter, amortized=True)
        except UpcycleError as error:
            self.note(f"{candidate.name}: source data unavailable ({error}); source-data estimators skip it.")
            return None

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)


class Estimator:
    """Base class: subclasses set ``name``, ``summary`` (one line) and implement :meth:`scores`.

    ``fallback`` names the estimator to use instead when this one raises :class:`EstimatorUnavailable`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    fallback: ClassVar[str | None] = None

    def scores(self, context: SelectionContext) -> dict[str, float]:
        """``{candidate fingerprint: score}``, higher is better; NaN where a candidate cannot be scored."""
        raise NotImplementedError


REGISTRY: dict[str, type[Estimator]] = {}


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    if cls.name in REGISTRY:
        raise ValueError(f"Two estimators are named {cls.name}.")
    REGISTRY[cls.name] = cls
    return cls


def get_estimator(name: str) -> Estimator:
    """A registered estimator by name, or the rank fusion of several joined by ``+`` (``logme+retrieval``)."""
    members = tuple(part.strip() for part in name.split("+"))
    unknown = [member for member in members if member not in REGISTRY]
    if unknown or not name:
        raise UpcycleError(f"Unknown estimator '{name}'; known: {', '.join(sorted(REGISTRY))} "
                           "(or several joined by '+').")
    if len(members) > 1:
        from .combined import Fusion

        return Fusion(members)
    return REGISTRY[name]()


@dataclass(frozen=True)
class Estimate:
    """What one estimator said about one target: scores, what it cost, and which estimator really ran."""

    requested: str
    used: str
    scores: dict[str, float]
    cpu_seconds: float
    amortized_seconds: float
    notes: tuple[str, ...]


def estimate(
    name: str, context: SelectionContext, *, budget: float | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> Estimate:
    """Run estimator ``name`` on a fresh cost meter, following its fallbacks when it is unavailable.

    ``budget`` caps the per-target CPU seconds (cached work counts at what it cost); an estimator that
    overruns it is abandoned for its fallback, and what it spent still counts.
    """
    spent, current, fallbacks = 0.0, name, []
    while True:
        estimator = get_estimator(current)
        limit = None if budget is None else budget - spent
        run = replace(context, meter=CostMeter(limit=limit), notes=[])
        try:
            scores = estimator.scores(run)
        except (EstimatorUnavailable, BudgetExhausted) as error:
            spent += run.meter.total
            message = f"{current} cannot score {context.target.name} ({error})"
            if estimator.fallback is None:
                raise EstimatorUnavailable(message + "; no fallback left.") from None
            fallbacks.append(f"{message}; falling back to {estimator.fallback}.")
            if on_fallback is not None:
                on_fallback(fallbacks[-1])
            current = estimator.fallback
            continue
        unscored = [c.name for c in context.candidates if c.fingerprint not in scores]
        if unscored:
            raise UpcycleError(f"Estimator {current} left candidates unscored: {', '.join(unscored)}.")
        return Estimate(name, current, scores, spent + run.meter.total, run.meter.amortized_total,
                        tuple(fallbacks + run.notes))
