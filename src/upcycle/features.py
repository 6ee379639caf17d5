"""Encoder features of task samples, computed once per (checkpoint, task, sample) and cached in the store.

One forward pass serves every estimator that reads frozen features (LogME, the linear probe, kNN, TextEmb).
What a feature costs is recorded with it, in CPU seconds, so a cached feature is still charged at the price
it was bought for: estimator costs do not depend on what happens to be cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .checkpoints import resolve_checkpoint
from .errors import UpcycleError
from .probes import embed
from .store import Store, ZooEntry
from .tasks import Split, Task, sample_indices


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


@dataclass
class TaskSource:
    """A task known by fingerprint, loaded only when its examples are really needed (a cache miss)."""

    fingerprint: str
    name: str
    load: Callable[[], Task]

    @cached_property
    def task(self) -> Task:
        return self.load()

    @classmethod
    def of(cls, task: Task) -> TaskSource:
        return cls(task.fingerprint, task.name, lambda: task)


class BudgetExhausted(UpcycleError):
    """The estimation spent more CPU seconds than its budget allows."""


@dataclass
class CostMeter:
    """CPU seconds by resource. A resource used twice (features shared by LogME, probe and kNN) is charged once.

    ``amortized`` resources are paid once per candidate and reused for every target (embeddings of a
    candidate's own source data); they are reported apart from the per-target cost. With a ``limit``, a
    charge that takes the per-target total over it raises :class:`BudgetExhausted` (checked after each unit
    of work: one candidate's forward pass or fit).
    """

    charges: dict[str, float] = field(default_factory=dict)
    amortized: dict[str, float] = field(default_factory=dict)
    limit: float | None = None

    def charge(self, key: str, cpu_seconds: float, *, amortized: bool = False) -> None:
        (self.amortized if amortized else self.charges)[key] = cpu_seconds
        if self.limit is not None and self.total > self.limit:
            raise BudgetExhausted(f"spent {self.total:.1f} of a {self.limit:.1f} CPU-second budget")

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Charge the CPU seconds of the block to ``key`` (added to what ``key`` already cost)."""
        started = time.process_time()
        yield
        self.charge(key, self.charges.get(key, 0.0) + time.process_time() - started)

    @property
    def total(self) -> float:
        return float(sum(self.charges.values()))

    @property
    def amortized_total(self) -> float:
        return float(sum(self.amortized.values()))


class FeatureCache:
    """Mean-pooled last hidden states of ``(checkpoint, task sample)``, kept in memory and in the store."""

    def __init__(self, store: Store):
        self.store = store
        self._memory: dict[tuple[str, str, str], tuple[np.ndarray, float]] = {}

    def pooled(
        self, checkpoint: ZooEntry, source: TaskSource, sample: Sample, meter: CostMeter, *, amortized: bool = False
    ) -> np.ndarray:
        """Features (n, hidden) float32 of ``sample`` of ``source`` through ``checkpoint``'s encoder."""
        key = (checkpoint.fingerprint, source.fingerprint, sample.key)
        found = self._memory.get(key) or self.store.get_features(*key)
        if found is None:
            started = time.process_time()
            features = embed(resolve_checkpoint(checkpoint.path), sample.take(source.task), max_length=sample.max_length)
            found = (features, time.process_time() - started)
            self.store.put_features(*key, features, found[1])
        self._memory[key] = found
        meter.charge(f"features:{':'.join(key)}", found[1], amortized=amortized)
        return found[0]


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (sentence-embedding convention of all-MiniLM-L6-v2): (n, d) -> (n, d)."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
