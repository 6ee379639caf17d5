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
import os
import threading
import time
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
from .training.devices import DEVICE_VARIABLE, available_cores, default_jobs, pool_devices

Job = TypeVar("Job", bound=BaseModel)
EXECUTORS = ("local", "pool", "ray")


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
    """Jobs in spawned worker processes, ``parallel`` at a time.

    ``fresh`` (the default): every job in a process of its own, so nothing a job loads stays in the driver or
    in a later job (ColD Fusion's privacy guarantee) and a job that crashes cannot take the driver down.
    Otherwise the pool: ``parallel`` long-lived workers take job after job, so each imports torch and
    transformers once. Either way each worker runs on one device: ``devices`` are handed out round-robin (a
    pool with 8 jobs on ``["cuda:0", "cuda:1"]`` puts 4 on each GPU), and it uses ``threads`` torch threads
    (default: this machine's cores shared evenly). Workers are spawned, never forked, so none shares the
    driver's CUDA context; they inherit the environment, ``UPCYCLE_DEVICE`` included.
    """

    def __init__(self, parallel: int = 1, *, fresh: bool = True, devices: Sequence[str] | None = None,
                 threads: int | None = None):
        if parallel < 1:
            raise ConfigError(f"--jobs must be at least 1, got {parallel}.")
        self.parallel, self.fresh = parallel, fresh
        self.devices = list(devices or [])
        self.threads = threads or max(1, available_cores() // parallel)

    def map(self, function: Callable[[str], str], jobs: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        slots = None
        if self.devices:
            slots = context.Queue()
            for device in self.devices:
                slots.put(device)
        with ProcessPoolExecutor(self.parallel, mp_context=context, max_tasks_per_child=1 if self.fresh else None,
                                 initializer=_start_worker, initargs=(slots, self.threads)) as pool:
            futures = {pool.submit(function, job.model_dump_json()): job for job in jobs}
            try:
                for future in as_completed(futures):
                    job = futures[future]
                    try:
                        payload = future.result()
                    except BrokenProcessPool:
                        raise UpcycleError(f"A worker process died ({describe(job)} or a job beside it): the run "
                                           "stopped. Finished results are kept; rerun the same command to "
                                           "resume.") from None
                    except Exception as error:  # the worker's own exception, re-raised here by the pool
                        raise UpcycleError(f"{describe(job)} failed: {type(error).__name__}: {error}") from None
                    yield job, payload
            finally:  # a failure, or a consumer that stops early: nothing more starts
                for future in futures:
                    future.cancel()


def _start_worker(slots, threads: int) -> None:
    """A worker's first act: watch its driver (:func:`_exit_with_driver`), take the next device in turn (from the
    queue ``slots``, put back at its end: the workers a pool starts are dealt the devices round-robin) and its
    share of the cores."""
    _exit_with_driver(os.getppid())
    if slots is not None:
        device = slots.get()
        slots.put(device)
        os.environ[DEVICE_VARIABLE] = device
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by configure_threads before every job


def _exit_with_driver(driver: int, every_s: float = 1.0) -> None:
    """End this worker soon after the process ``driver`` is gone. The pool's own shutdown covers a driver that
    exits or raises, and Ctrl-C reaches the whole process group, but a driver killed alone (``kill PID``, an
    out-of-memory kill) would leave its workers training, unseen, on cores the next run needs. An orphan is
    adopted by another process, so a changed parent id is the signal; its job's result had nowhere to go."""

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="upcycle-driver-watch", daemon=True).start()


class RayExecutor:
    """Every job as a Ray task on a cluster; results come back to the driver.

    Each job is one task needing ``cpus_per_job`` CPUs (a worker then uses that many torch threads). A
    worker that dies is retried by Ray (``max_retries``); a driver that dies takes its in-flight tasks with
    it, and the rerun submits only what is not finished yet. Workers load checkpoints and tasks from the
    paths in the jobs, so those paths must be visible on every node (one machine, or a shared disk).
    """

    def __init__(self, address: str | None = None, *, cpus_per_job: int = 1, gpus_per_job: float = 0.0,
                 max_retries: int = 2):
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job
        self.max_retries = max_retries

    def options(self) -> dict:
        """The Ray task options of every job: its CPUs, its (fractional) GPU share, and the device it runs on.

        Ray hides every GPU from a task that asks for none (``CUDA_VISIBLE_DEVICES=""``) and shows a task that asks
        for a share only the GPU it was packed onto, so the job's device follows its request: ``cuda`` or ``cpu``.
        """
        device = "cuda" if self.gpus_per_job > 0 else "cpu"
        return {"num_cpus": self.cpus_per_job, "num_gpus": self.gpus_per_job, "max_retries": self.max_retries,
                "runtime_env": {"env_vars": {DEVICE_VARIABLE: device, "OMP_NUM_THREADS": str(self.cpus_per_job)}}}

    def connect(self) -> None:
        try:
            import ray  # lazy: Ray is heavy and only this executor needs it
        except ImportError:  # pragma: no cover - ray is a dependency
            raise ConfigError("The Ray executor needs the 'ray' package: pip install 'ray>=2.9'.") from None
        if ray.is_initialized():
            return
        # No address means a new local instance, never Ray's own default: that joins whatever cluster the machine's
        # last `ray start` wrote to /tmp/ray/ray_current_cluster, and hangs if that cluster is gone.
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = "a new local Ray instance" if address == "local" else address
            raise UpcycleError(f"Could not connect to Ray at {where}: {error}") from None

    def map(self, function: Callable[[str], str], jobs: Sequence[Job], describe: Callable[[Job], str]
            ) -> Iterator[tuple[Job, str]]:
        if not jobs:
            return
        import ray  # lazy: see connect

        self.connect()
        if self.gpus_per_job > 0 and not ray.cluster_resources().get("GPU"):
            raise UpcycleError(f"--gpus-per-job {self.gpus_per_job:g}: the Ray cluster has no GPU; its jobs would "
                               "wait forever. Use --gpus-per-job 0 (the CPU) or a cluster with GPUs.")
        remote = ray.remote(**self.options())(function)
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


def make_executor(name: str, *, address: str | None = None, isolate: bool = False, jobs: int | None = None,
                  gpus_per_job: float | None = None, model_bytes: int = 500 * 2**20) -> Executor:
    """The executor called ``name``:

    - ``local``: jobs one after another in this process (with ``isolate``, each in a fresh process of its own);
    - ``pool``: ``jobs`` worker processes at once (default from the device: one per core on the CPU, several per
      GPU sized from its memory and ``model_bytes``, see :func:`~upcycle.training.devices.default_jobs`); with
      ``isolate`` each job still gets a fresh process;
    - ``ray``: Ray tasks on the cluster at ``address`` (or a new local instance), each asking for
      ``gpus_per_job`` of a GPU (0.125 packs 8 jobs onto one).

    ConfigError for an unknown name or an option that does not apply to it.
    """
    if name not in EXECUTORS:
        raise ConfigError(f"Unknown executor '{name}': use {', '.join(EXECUTORS)}.")
    if name != "ray" and address is not None:
        raise ConfigError("--ray-address only applies to --executor ray.")
    if name != "ray" and gpus_per_job is not None:
        raise ConfigError("--gpus-per-job only applies to --executor ray (a pool takes --jobs).")
    if name != "pool" and jobs is not None:
        raise ConfigError("--jobs only applies to --executor pool.")
    if gpus_per_job is not None and not 0 <= gpus_per_job <= 1:
        raise ConfigError(f"--gpus-per-job is a share of one GPU, from 0 to 1; got {gpus_per_job:g}.")
    if name == "ray":
        requested = os.environ.get(DEVICE_VARIABLE, "auto").strip().lower()
        wants_gpu = requested.startswith("cuda") or requested == "mps"
        if requested != "auto" and wants_gpu != bool(gpus_per_job):
            raise ConfigError(f"With --executor ray, Ray places each job: it runs on a GPU exactly when it asks for "
                              f"a share of one (--gpus-per-job 0.125 packs 8 per GPU), not by --device "
                              f"{requested}; leave --device at auto.")
        return RayExecutor(address, gpus_per_job=gpus_per_job or 0.0)
    if name == "pool":
        devices = pool_devices()
        return ProcessExecutor(default_jobs(devices, model_bytes) if jobs is None else jobs, fresh=isolate,
                               devices=devices)
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
