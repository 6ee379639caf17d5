"""What an estimator reads: the :class:`SelectionContext` of one target, and encoder features of task samples,
computed once per (checkpoint, task, sample) and cached in the store.

One forward pass serves every estimator that reads frozen features (LogME, the linear probe, kNN, TextEmb).
Costs are seconds on the device the estimation runs on (:func:`cost_clock`): CPU seconds of the process on the
CPU, wall seconds after a synchronize on an accelerator, where the process's CPU time misses the work. What a
feature costs is recorded with it, so a cached feature is still charged at the price it was bought for (on the
device that computed it): estimator costs do not depend on what happens to be cached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..checkpoints import resolve_checkpoint
from ..errors import UpcycleError
from ..store import Store, ZooEntry
from ..tasks import Split, Task, TaskSource, load_task, sample_indices
from ..training import embed
from ..training.devices import device_type, resolve_device


@dataclass(frozen=True)
class Sample:
    """Which examples of a task: up to ``n`` of ``split``, stratified for classification, fixed by ``seed``."""

    n: int = 500
    seed: int = 0
    split: str = "train"
    max_length: int = 128

    @property
    def key(self) -> str:
        return f"{self.split}:n={self.n}:seed={self.seed}:len={self.max_length}"

    def take(self, task: Task) -> Split:
        split = task.splits[self.split]
        if len(split) <= self.n:
            return split
        return split.take(sample_indices(split.labels, self.n, self.seed, stratify=task.kind == "classification"))


class BudgetExhausted(UpcycleError):
    """The estimation spent more seconds (of its device's :func:`cost_clock`) than its budget allows."""


def synchronize(device: str) -> None:
    """Wait until the work queued on accelerator ``device`` (``cuda:N``, ``mps``) is done."""
    import torch  # lazy: torch stays off the CLI's --help path

    if device_type(device) == "cuda":
        torch.cuda.synchronize(torch.device(device))
    elif device_type(device) == "mps":
        torch.mps.synchronize()


def cost_clock(device: str, sync: Callable[[str], None] | None = None) -> Callable[[], float]:
    """The clock the cost of work on ``device`` is read from, in seconds.

    On ``cpu``, the CPU time of the process (:func:`time.process_time`: what the work took from the machine,
    whatever else runs beside it). On an accelerator (``cuda:N``, ``mps``) the process's CPU time misses the work
    done on the device, so wall time (:func:`time.perf_counter`) read after ``sync(device)`` (default
    :func:`synchronize`): queued kernels are finished, and counted, before the clock is read.
    """
    if device_type(device) == "cpu":
        return time.process_time

    def wall_after_sync() -> float:
        (sync or synchronize)(device)
        return time.perf_counter()

    return wall_after_sync


def clock_name(device: str) -> str:
    """What :func:`cost_clock` measures on ``device``: ``CPU time``, or ``wall time on cuda:0``."""
    return "CPU time" if device_type(device) == "cpu" else f"wall time on {device}"


@dataclass
class CostMeter:
    """Seconds by resource, read from the :func:`cost_clock` of ``device`` (default: ``resolve_device()``, i.e.
    ``$UPCYCLE_DEVICE`` or auto, when the meter is made). A resource used twice (features shared by LogME, probe
    and kNN) is charged once.

    ``amortized`` resources are paid once per candidate and reused for every target (embeddings of a
    candidate's own source data); they are reported apart from the per-target cost. With a ``limit``, a
    charge that takes the per-target total over it raises :class:`BudgetExhausted` (checked after each unit
    of work: one candidate's forward pass or fit).
    """

    charges: dict[str, float] = field(default_factory=dict)
    amortized: dict[str, float] = field(default_factory=dict)
    limit: float | None = None
    device: str = field(default_factory=resolve_device)

    @property
    def clock(self) -> Callable[[], float]:
        return cost_clock(self.device)

    def charge(self, key: str, seconds: float, *, amortized: bool = False) -> None:
        (self.amortized if amortized else self.charges)[key] = seconds
        if self.limit is not None and self.total > self.limit:
            raise BudgetExhausted(f"spent {self.total:.2f} of a {self.limit:.2f}-second budget "
                                  f"({clock_name(self.device)})")

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Charge the seconds of the block on the meter's clock to ``key`` (added to what ``key`` already cost)."""
        clock = self.clock
        started = clock()
        yield
        self.charge(key, self.charges.get(key, 0.0) + clock() - started)

    @property
    def total(self) -> float:
        return float(sum(self.charges.values()))

    @property
    def amortized_total(self) -> float:
        return float(sum(self.amortized.values()))


class FeatureCache:
    """Mean-pooled last hidden states of ``(checkpoint, task sample)``, kept in memory and in the store."""

    def __init__(self, store: Store, *, allow_pickle: bool = False):
        self.store = store
        self.allow_pickle = allow_pickle  # candidates with pickle weights may be loaded (trusted files only)
        self._memory: dict[tuple[str, str, str], tuple[np.ndarray, float]] = {}

    def pooled(
        self, checkpoint: ZooEntry, source: TaskSource, sample: Sample, meter: CostMeter, *, amortized: bool = False
    ) -> np.ndarray:
        """Features (n, hidden) float32 of ``sample`` of ``source`` through ``checkpoint``'s encoder, computed on
        the meter's device and timed on its clock; a cached feature is charged what it cost when computed."""
        key = (checkpoint.fingerprint, source.fingerprint, sample.key)
        found = self._memory.get(key) or self.store.get_features(*key)
        if found is None:
            clock = meter.clock
            started = clock()
            features = embed(resolve_checkpoint(checkpoint.path, allow_pickle=self.allow_pickle),
                             sample.take(source.task), max_length=sample.max_length, device=meter.device)
            found = (features, clock() - started)
            self.store.put_features(*key, features, found[1])
        self._memory[key] = found
        meter.charge(f"features:{':'.join(key)}", found[1], amortized=amortized)
        return found[0]


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

    def per_candidate(self, label: str, score: Callable[[ZooEntry], float]) -> dict[str, float]:
        """``{fingerprint: score(candidate)}`` over the candidates. One that cannot be scored (unreadable or
        corrupt weights, NaN features, a numerical failure) gets NaN, ranks last and is named in a note; the others
        are still ranked. Running out of budget, or the estimator not applying to the target, stops it as before."""
        result = {}
        for candidate in self.candidates:
            try:
                result[candidate.fingerprint] = score(candidate)
            except (BudgetExhausted, EstimatorUnavailable):
                raise
            except (UpcycleError, ArithmeticError, ValueError) as error:  # LinAlgError is a ValueError
                self.note(f"{candidate.name}: {label} could not score it ({type(error).__name__}: {error}); "
                          "ranked last.")
                result[candidate.fingerprint] = math.nan
        return result

    def score_features(self, label: str, fit: Callable[[np.ndarray], float]) -> dict[str, float]:
        """``{fingerprint: fit(target features (n, hidden))}`` over the candidates (see :meth:`per_candidate`);
        each fit is timed as the estimator's own work under ``label``."""

        def score(candidate: ZooEntry) -> float:
            features = self.target_features(candidate)
            if not np.isfinite(features).all():
                raise FloatingPointError("its features hold NaN or inf; are its weights corrupt?")
            with self.meter.timed(f"{label}:{candidate.fingerprint}"):
                return fit(features)

        return self.per_candidate(label, score)

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
                raise EstimatorUnavailable(f"{where}: the source data of {candidate.name} changed "
                                           "since it was trained.")
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
