"""One ColD Fusion contributor: it owns a dataset path, finetunes the shared base on it, and returns weights.

Everything here that touches data runs in the contributor's own worker (a fresh process, or a Ray task).
The driver builds a :class:`ContributionRequest` from the contributor's name and path without opening
anything under that path, and gets back a :class:`Contribution`: where the finetuned weights are, their
fingerprint, and how much was trained. No example, label or per-example output crosses back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ..checkpoints import CheckpointRef, resolve_checkpoint
from ..errors import CheckpointError
from ..execute import Executor
from ..protocols import Protocol
from ..specs import FinetuneSpec
from ..tasks import TaskRef, load_task
from ..training import run_finetune


class Contributor(BaseModel):
    """A participant: a name (the task name in results) and the data only its worker reads."""

    model_config = ConfigDict(frozen=True)

    name: str
    data: str

    @classmethod
    def parse(cls, reference: str, data_dir: Path | None = None) -> Contributor:
        """``NAME=PATH``, a path, or a task name in ``data_dir`` (default ``$UPCYCLE_DATA_DIR``); nothing is
        opened."""
        name, sep, path = reference.partition("=")
        if sep:
            return cls(name=name.strip(), data=str(Path(path.strip()).expanduser().resolve()))
        if data_dir is None and os.environ.get("UPCYCLE_DATA_DIR"):
            data_dir = Path(os.environ["UPCYCLE_DATA_DIR"])
        candidate = Path(reference).expanduser()
        if data_dir is not None and not candidate.exists() and (data_dir / reference).exists():
            candidate = data_dir / reference
        return cls(name=candidate.name, data=str(candidate.resolve()))


class ContributionRequest(BaseModel):
    """Finetune ``base`` on the contributor's data with ``protocol`` and ``seed``; save the weights to ``out``."""

    model_config = ConfigDict(frozen=True)

    contributor: Contributor
    base: CheckpointRef
    protocol: Protocol
    seed: int
    out: str
    iteration: int


class Contribution(BaseModel):
    """What comes back: the weights (a checkpoint folder) and the size of the work, nothing about examples."""

    contributor: str
    iteration: int
    checkpoint_path: str
    fingerprint: str
    base_fingerprint: str
    seed: int
    n_train: int | None = None  # None when the contribution was found already saved
    train_seconds: float = 0.0
    worker_pid: int | None = None  # the process that trained it (never the driver's)


def contribute(request: ContributionRequest) -> Contribution:
    """The worker's job: load the data it owns, finetune the base, save the weights atomically.

    A contribution already saved at ``request.out`` from the same base and seed is returned as is, so a
    rerun after a crash never trains a finished contributor again.
    """
    done = finished_contribution(request)
    if done is not None:
        return done
    task = load_task(request.contributor.data, name=request.contributor.name)
    spec = FinetuneSpec(base=request.base, task=TaskRef.of(task), seed=request.seed, protocol=request.protocol)
    result = run_finetune(spec, save_to=request.out, task=task)
    saved = finished_contribution(request)
    assert saved is not None, "run_finetune saved the weights with this base and seed in their provenance"
    return saved.model_copy(update={"n_train": result.n_train, "train_seconds": result.train_seconds,
                                    "worker_pid": os.getpid()})


def finished_contribution(request: ContributionRequest) -> Contribution | None:
    """The contribution saved at ``request.out`` if it was made from this base and seed (weights are written
    atomically, so a folder that resolves is complete), else None. Reads only the checkpoint's own files."""
    if not Path(request.out).exists():
        return None
    try:
        saved = resolve_checkpoint(request.out)
    except CheckpointError:
        return None
    provenance = saved.provenance or {}
    if provenance.get("base_fingerprint") != request.base.fingerprint or provenance.get("seed") != request.seed:
        return None
    return Contribution(contributor=request.contributor.name, iteration=request.iteration,
                        checkpoint_path=str(saved.path), fingerprint=saved.fingerprint,
                        base_fingerprint=request.base.fingerprint, seed=request.seed)


def contribute_json(request_json: str) -> str:
    """What an executor runs for one contributor: the request's JSON in, the contribution's JSON out."""
    return contribute(ContributionRequest.model_validate_json(request_json)).model_dump_json()


def describe_request(request: ContributionRequest) -> str:
    return f"contributor {request.contributor.name} (iteration {request.iteration})"


def run_contributions(executor: Executor, requests: list[ContributionRequest]) -> Iterator[Contribution]:
    """Run each request as an ``executor`` job (only the request crosses over) and yield contributions as
    they finish."""
    for _, payload in executor.map(contribute_json, requests, describe_request):
        yield Contribution.model_validate_json(payload)
