"""The plain values that the store, the executors and the trainer pass around: what to finetune and what came out.

A :class:`FinetuneSpec` names a base checkpoint, a task, a seed and a protocol. Its :meth:`~FinetuneSpec.key`
hashes their *content* (checkpoint and task fingerprints, the protocol's values), so the same work always has
the same key wherever the files live; the results store is keyed by it. Nothing here imports torch or the
training loop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from .checkpoints import Checkpoint, CheckpointRef, resolve_checkpoint
from .protocols import Protocol, get_protocol
from .tasks import Task, TaskRef, load_task

ENGINE_VERSION = 1  # bump when a change to the training loop changes what a spec produces
ProgressCallback = Callable[[str, int, int], None]  # (phase, done, total)


class FinetuneSpec(BaseModel):
    """One finetune to run: base checkpoint x task x seed x protocol. Immutable and hashable by :meth:`key`."""

    model_config = ConfigDict(frozen=True)

    base: CheckpointRef
    task: TaskRef
    seed: int = 0
    protocol: Protocol

    def key(self) -> str:
        """sha256 of the canonical JSON of what determines the outcome; paths and names are left out."""
        identity = {
            "base": self.base.fingerprint,
            "task": self.task.fingerprint,
            "seed": self.seed,
            "protocol": self.protocol.model_dump(exclude={"name"}),
            "engine": ENGINE_VERSION,
        }
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def create(
        cls,
        base: str | Checkpoint,
        task: str | Task,
        *,
        seed: int = 0,
        protocol: str | Protocol = "quick",
        overrides: dict[str, Any] | None = None,
        allow_pickle: bool = False,
        **task_options: Any,
    ) -> FinetuneSpec:
        """Resolve ``base`` and load ``task`` (with loader ``task_options``) to build a spec."""
        checkpoint = base if isinstance(base, Checkpoint) else resolve_checkpoint(base, allow_pickle=allow_pickle)
        loaded = task if isinstance(task, Task) else load_task(task, **task_options)
        options = {k: v for k, v in task_options.items() if k in TaskRef.model_fields and v is not None}
        options.pop("name", None)
        return cls(base=CheckpointRef.of(checkpoint), task=TaskRef.of(loaded, **options), seed=seed,
                   protocol=get_protocol(protocol, overrides))


class SavedFinetune(BaseModel):
    """An executor job: finetune ``spec`` and save the model to ``save_to`` (how ``zoo build`` runs in a pool)."""

    model_config = ConfigDict(frozen=True)

    spec: FinetuneSpec
    save_to: str


class FinetuneResult(BaseModel):
    """What a finetune measured. ``metrics`` are on the test split; ``validation`` on the validation split."""

    key: str
    task_name: str
    base_name: str
    seed: int
    protocol: str
    metric: str
    score: float
    metrics: dict[str, float]
    validation: dict[str, float] | None = None
    n_train: int
    n_test: int
    epochs_run: int
    train_seconds: float
    eval_seconds: float
    train_examples_per_s: float
    eval_examples_per_s: float
    eval_precision: str
    checkpoint_path: str | None = None
    versions: dict[str, str]
    created_at: str
    notes: list[str] = []  # what makes the score less certain than it looks (small or carved test split, ...)
    device: str = "cpu"  # where it ran (not part of the key: the same spec anywhere is the same experiment)
    # the checkpoint build it ran on, where that build is gone and the result was adopted for a rebuild of the same
    # recipe (``upcycle store merge --adopt-rebuilds``: the same training spec on another CPU model rounds differently)
    measured_on: str | None = None

