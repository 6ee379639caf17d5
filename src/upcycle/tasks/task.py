"""Tasks as values: labelled text with train / validation / test splits, and a seeded, stratified sampler.

A :class:`Task` is immutable and known by the fingerprint of its content; :class:`TaskSource` is a task known
by fingerprint whose examples are loaded only when needed. Loading lives in :mod:`upcycle.tasks.loading`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import numpy as np

TaskKind = Literal["classification", "regression"]
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """One split: ``n`` texts, optional second texts (sentence pairs) and ``n`` labels.

    ``labels`` holds class indices (int) for classification, targets (float) for regression.
    """

    texts: tuple[str, ...]
    labels: tuple[float, ...] | tuple[int, ...]
    text_pairs: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: Sequence[int]) -> Split:
        """The examples at ``indices``, in that order."""
        pairs = None if self.text_pairs is None else tuple(self.text_pairs[i] for i in indices)
        return Split(
            texts=tuple(self.texts[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            text_pairs=pairs,
        )


@dataclass(frozen=True)
class Task:
    """A labelled dataset with ``train``, ``validation`` and ``test`` splits.

    Attributes:
        name: short name used in tables (``sst2``).
        kind: ``"classification"`` or ``"regression"``.
        label_names: class names in index order; ``None`` for regression.
        splits: ``{"train": Split, "validation": Split, "test": Split}``.
        source: where it was loaded from (a path or a hub id), for provenance only.
        notes: how missing splits were made, if any.
    """

    name: str
    kind: TaskKind
    label_names: tuple[str, ...] | None
    splits: Mapping[str, Split]
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def num_labels(self) -> int:
        """Output width of a head for this task: the number of classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.splits["train"].text_pairs is not None

    @property
    def primary_metric(self) -> str:
        return "accuracy" if self.kind == "classification" else "spearman"

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the task's content (kind, labels, every example of every split); not of its name or path."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.kind, self.label_names]).encode())
        for split_name in SPLITS:
            split = self.splits[split_name]
            digest.update(split_name.encode())
            payload = [split.texts, split.text_pairs, [float(x) for x in split.labels]]
            digest.update(json.dumps(payload, ensure_ascii=False).encode())
        return digest.hexdigest()

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def subsample(self, max_train: int | None, max_eval: int | None, seed: int = 0) -> Task:
        """A deterministic subsample: at most ``max_train`` train and ``max_eval`` validation/test examples.

        Classification samples are stratified (class proportions kept, every class that fits kept).
        The same arguments always select the same examples.
        """
        limits = {"train": max_train, "validation": max_eval, "test": max_eval}
        splits = {}
        for name, split in self.splits.items():
            limit = limits[name]
            if limit is None or len(split) <= limit:
                splits[name] = split
                continue
            stratify = self.kind == "classification"
            splits[name] = split.take(sample_indices(split.labels, limit, seed, stratify))
        return replace(self, splits=splits)


def sample_indices(labels: Sequence[float], n: int, seed: int, stratify: bool) -> list[int]:
    """Pick ``n`` of ``len(labels)`` indices, returned in ascending order.

    Stratified sampling allocates ``n`` over classes in proportion to their counts (largest remainder,
    at least one per class while ``n`` allows), then samples uniformly within each class.
    """
    rng = np.random.default_rng(seed)
    total = len(labels)
    if not stratify:
        return sorted(rng.choice(total, size=n, replace=False).tolist())
    label_array = np.asarray(labels)
    classes, counts = np.unique(label_array, return_counts=True)
    quota = counts * n / total
    allocation = np.floor(quota).astype(int)
    if n >= len(classes):
        allocation = np.maximum(allocation, 1)
    allocation = np.minimum(allocation, counts)
    remainder_order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while allocation.sum() < n:
        for c in remainder_order:
            if allocation.sum() >= n:
                break
            if allocation[c] < counts[c]:
                allocation[c] += 1
    while allocation.sum() > n:
        allocation[np.argmax(allocation)] -= 1
    chosen: list[int] = []
    for c, k in zip(classes, allocation):
        members = np.flatnonzero(label_array == c)
        chosen.extend(rng.choice(members, size=int(k), replace=False).tolist())
    return sorted(chosen)


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

