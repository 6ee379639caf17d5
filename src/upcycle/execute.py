"""Executors run finetune specs; :func:`run_specs` skips what the store already holds and records the rest.

An executor only turns specs into results. The driver (the caller of :func:`run_specs`) is the only writer
to the store, so results are recorded one at a time as they arrive: an interrupted run loses at most the
jobs in flight, and rerunning the same specs resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol as TypingProtocol
from typing import TypeVar

from pydantic import BaseModel

from .errors import ConfigError, UpcycleError
from .finetune import FinetuneResult, FinetuneSpec, ProgressCallback, run_finetune
from .store import Store

Job = TypeVar("Job", bound=BaseModel)


class Executor(TypingProtocol):
    def run(self, specs: list[FinetuneSpec]) -> Iterator[tuple[FinetuneSpec, FinetuneResult]]:
        """Yield ``(spec, result)`` for every spec, in any order."""
        ...


class LocalExecutor:
    """Runs specs one after another in this process."""

    def __init__(self, progress: ProgressCallback | None = None):
        self.progress = progress

    def run(self, specs: list[FinetuneSpec]) -> Iterator[tuple[FinetuneSpec, FinetuneResult]]:
        for spec in specs:
            yield spec, run_finetune(spec, progress=self.progress)


def _finetune_remote(spec_json: str) -> str:
    """What a Ray worker runs: JSON in, JSON out, so nothing but plain text crosses the wire."""
    spec = FinetuneSpec.model_validate_json(spec_json)
    return run_finetune(spec).model_dump_json()


class RayExecutor:
    """Runs the same specs as Ray tasks on a cluster; results come back to the driver, which stores them.

    Each spec is one task needing ``cpus_per_job`` CPUs (a worker then uses that many torch threads). A
    worker that dies is retried by Ray (``max_retries``); a driver that dies takes its in-flight tasks with
    it, and the rerun submits only what the store does not hold yet. Workers load checkpoints and tasks from
    the paths in the specs, so those paths must be visible on every node (one machine, or a shared disk).
    """

    def __init__(self, address: str | None = None, *, cpus_per_job: int = 1, max_retries: int = 2):
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.max_retries = max_retries

    def connect(self) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a dependency
            raise ConfigError("The Ray executor needs the 'ray' package: pip install 'ray>=2.9'.") from None
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = self.address or "a new local Ray instance"
            raise UpcycleError(f"Could not connect to Ray at {where}: {error}") from None

    def run(self, specs: list[FinetuneSpec]) -> Iterator[tuple[FinetuneSpec, FinetuneResult]]:
        for spec, payload in self.map(_finetune_remote, specs, lambda s: f"{s.base.name} on {s.task.name} (seed {s.seed})"):
            yield spec, FinetuneResult.model_validate_json(payload)

    def map(self, function: Callable[[str], str], items: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        """Run ``function(item.model_dump_json())`` as one Ray task per item and yield ``(item, returned JSON)``
        as each finishes. A failure cancels the rest and raises UpcycleError naming ``describe(item)``."""
        if not items:
            return
        import ray

        self.connect()
        remote = ray.remote(num_cpus=self.cpus_per_job, max_retries=self.max_retries)(function)
        in_flight = {remote.remote(item.model_dump_json()): item for item in items}
        while in_flight:
            finished, _ = ray.wait(list(in_flight), num_returns=1)
            for reference in finished:
                item = in_flight.pop(reference)
                try:
                    payload = ray.get(reference)
                except ray.exceptions.RayError as error:
                    for other in in_flight:
                        ray.cancel(other)
                    raise UpcycleError(_describe_failure(describe(item), error)) from None
                yield item, payload


def _describe_failure(what: str, error: Exception) -> str:
    """One line: which job, what went wrong; a lost node or worker (not a bug in the job) says how to resume."""
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause if isinstance(error.cause, Exception) else error
        return f"{what} failed on a Ray worker: {type(cause).__name__}: {cause}"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"Ray lost {what}: {type(error).__name__}: {first_line} Finished results are stored; "
            "rerun the same command to resume.")


def check_executor(name: str, address: str | None) -> None:
    """Refuse an unknown ``--executor``, and a ``--ray-address`` given to the local one."""
    if name not in ("local", "ray"):
        raise ConfigError(f"Unknown executor '{name}': use local or ray.")
    if name == "local" and address is not None:
        raise ConfigError("--ray-address only applies to --executor ray.")


def make_executor(name: str, *, address: str | None = None, progress: ProgressCallback | None = None) -> Executor:
    """``local`` (in this process) or ``ray`` (the cluster at ``address``, or a new local instance)."""
    check_executor(name, address)
    return LocalExecutor(progress) if name == "local" else RayExecutor(address)


def pending(specs: Iterable[FinetuneSpec], store: Store) -> list[FinetuneSpec]:
    """The specs whose results are not stored yet, without duplicates, in their given order."""
    seen: set[str] = set()
    todo = []
    for spec in specs:
        key = spec.key()
        if key not in seen and not store.has_result(key):
            todo.append(spec)
        seen.add(key)
    return todo


def run_specs(
    specs: Iterable[FinetuneSpec], store: Store, executor: Executor | None = None, *, force: bool = False
) -> Iterator[FinetuneResult]:
    """Run the specs not yet stored (all of them with ``force``) and store each result as it arrives."""
    specs = list(specs)
    todo = list({spec.key(): spec for spec in specs}.values()) if force else pending(specs, store)
    for spec, result in (executor or LocalExecutor()).run(todo):
        store.put_result(spec, result)
        yield result
