"""The one executor: JSON jobs in, JSON results out, in this process, in fresh processes, or as Ray tasks.

A job is a pydantic model and the function that runs it is a module-level ``str -> str`` (the job's JSON in,
the result's JSON out), so the same job runs anywhere and nothing but plain text crosses a process or
network boundary. Bench cells (:func:`run_specs` with :func:`~upcycle.training.loop.finetune_json`) and ColD
Fusion contributors (:func:`~upcycle.fusion.contributor.contribute_json`) both go through :meth:`Executor.map`.

The driver is the only writer to the store: :func:`run_specs` records results one at a time as they arrive,
so an interrupted run loses at most the jobs in flight, and rerunning the same specs resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol as TypingProtocol
from typing import TypeVar

from pydantic import BaseModel

from .errors import ConfigError, UpcycleError
from .specs import FinetuneResult, FinetuneSpec
from .store import Store
from .training import finetune_json

Job = TypeVar("Job", bound=BaseModel)
EXECUTORS = ("local", "ray")


class Executor(TypingProtocol):
    def map(self, function: Callable[[str], str], jobs: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        """Run ``function(job.model_dump_json())`` for every job and yield ``(job, returned JSON)`` in any order.
        A failure stops the rest and raises UpcycleError naming ``describe(job)``."""
        ...


class LocalExecutor:
    """One job after another in this process; a job's own error propagates unchanged."""

    def map(self, function: Callable[[str], str], jobs: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        for job in jobs:
            yield job, function(job.model_dump_json())


class ProcessExecutor:
    """Every job in its own freshly spawned process, ``parallel`` at a time (one by default): nothing a job
    loads stays in the driver (ColD Fusion's privacy guarantee), and a job that crashes cannot take it down."""

    def __init__(self, parallel: int = 1):
        self.parallel = parallel

    def map(self, function: Callable[[str], str], jobs: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.parallel, mp_context=context, max_tasks_per_child=1) as pool:
            futures = {pool.submit(function, job.model_dump_json()): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    payload = future.result()
                except BrokenProcessPool:
                    raise UpcycleError(f"The worker of {describe(job)} died. Finished results are kept; "
                                       "rerun the same command to resume.") from None
                except Exception as error:  # the worker's own exception, re-raised here by the pool
                    for other in futures:
                        other.cancel()
                    raise UpcycleError(f"{describe(job)} failed: {type(error).__name__}: {error}") from None
                yield job, payload


class RayExecutor:
    """Every job as a Ray task on a cluster; results come back to the driver.

    Each job is one task needing ``cpus_per_job`` CPUs (a worker then uses that many torch threads). A
    worker that dies is retried by Ray (``max_retries``); a driver that dies takes its in-flight tasks with
    it, and the rerun submits only what is not finished yet. Workers load checkpoints and tasks from the
    paths in the jobs, so those paths must be visible on every node (one machine, or a shared disk).
    """

    def __init__(self, address: str | None = None, *, cpus_per_job: int = 1, max_retries: int = 2):
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.max_retries = max_retries

    def connect(self) -> None:
        try:
            import ray  # lazy: Ray is heavy and only this executor needs it
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

    def map(self, function: Callable[[str], str], jobs: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        if not jobs:
            return
        import ray  # lazy: see connect

        self.connect()
        remote = ray.remote(num_cpus=self.cpus_per_job, max_retries=self.max_retries)(function)
        in_flight = {remote.remote(job.model_dump_json()): job for job in jobs}
        while in_flight:
            finished, _ = ray.wait(list(in_flight), num_returns=1)
            for reference in finished:
                job = in_flight.pop(reference)
                try:
                    payload = ray.get(reference)
                except ray.exceptions.RayError as error:
                    for other in in_flight:
                        ray.cancel(other)
                    raise UpcycleError(_describe_failure(describe(job), error)) from None
                yield job, payload


def _describe_failure(what: str, error: Exception) -> str:
    """One line: which job, what went wrong; a lost node or worker (not a bug in the job) says how to resume."""
    import ray  # lazy: only reached from RayExecutor

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause if isinstance(error.cause, Exception) else error
        return f"{what} failed on a Ray worker: {type(cause).__name__}: {cause}"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"Ray lost {what}: {type(error).__name__}: {first_line} Finished results are stored; "
            "rerun the same command to resume.")


def make_executor(name: str, *, address: str | None = None, isolate: bool = False) -> Executor:
    """``local`` (in this process, or with ``isolate`` a fresh process per job) or ``ray`` (the cluster at
    ``address``, or a new local instance). Refuses an unknown name, and an address given to ``local``."""
    if name not in EXECUTORS:
        raise ConfigError(f"Unknown executor '{name}': use local or ray.")
    if name == "local" and address is not None:
        raise ConfigError("--ray-address only applies to --executor ray.")
    if name == "ray":
        return RayExecutor(address)
    return ProcessExecutor() if isolate else LocalExecutor()


def describe_spec(spec: FinetuneSpec) -> str:
    return f"{spec.base.name} on {spec.task.name} (seed {spec.seed})"


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
    for spec, payload in (executor or LocalExecutor()).map(finetune_json, todo, describe_spec):
        result = FinetuneResult.model_validate_json(payload)
        store.put_result(spec, result)
        yield result
