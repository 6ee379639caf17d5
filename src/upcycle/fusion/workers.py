"""Where contributors run: each in a fresh local process (the default) or as a Ray task on a cluster.

Both take :class:`ContributionRequest` s and yield :class:`Contribution` s as they finish. The driver passes
only the request (the contributor's name and data path, the base's location and fingerprint) and reads
back only the result; the data is opened in the worker alone.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol as TypingProtocol

from ..errors import ConfigError, UpcycleError
from .contributor import Contribution, ContributionRequest, contribute_json


class Workers(TypingProtocol):
    def run(self, requests: list[ContributionRequest]) -> Iterator[Contribution]:
        """Yield one contribution per request, in any order."""
        ...


class LocalWorkers:
    """Every contribution in its own freshly spawned process, ``parallel`` at a time (one by default)."""

    def __init__(self, parallel: int = 1):
        self.parallel = parallel

    def run(self, requests: list[ContributionRequest]) -> Iterator[Contribution]:
        if not requests:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.parallel, mp_context=context, max_tasks_per_child=1) as pool:
            futures = {pool.submit(contribute_json, r.model_dump_json()): r for r in requests}
            for future in as_completed(futures):
                request = futures[future]
                try:
                    payload = future.result()
                except BrokenProcessPool:
                    raise UpcycleError(f"The worker of contributor {request.contributor.name} died (iteration "
                                       f"{request.iteration}). Finished contributions are kept; rerun to resume.") from None
                except Exception as error:
                    for other in futures:
                        other.cancel()
                    raise UpcycleError(f"Contributor {request.contributor.name} failed (iteration "
                                       f"{request.iteration}): {type(error).__name__}: {error}") from None
                yield Contribution.model_validate_json(payload)


class RayWorkers:
    """Every contribution as a Ray task (``cpus_per_task`` CPUs, retried if its worker dies).

    The base and the output folder are paths, so the repository folder must be visible to every node (one
    machine, or a shared disk), as for :class:`upcycle.execute.RayExecutor`.
    """

    def __init__(self, address: str | None = None, *, cpus_per_task: int = 1, max_retries: int = 2):
        from ..execute import RayExecutor

        self._connector = RayExecutor(address)
        self.cpus_per_task = cpus_per_task
        self.max_retries = max_retries

    def run(self, requests: list[ContributionRequest]) -> Iterator[Contribution]:
        if not requests:
            return
        import ray

        self._connector.connect()
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=self.max_retries)(contribute_json)
        in_flight = {remote.remote(r.model_dump_json()): r for r in requests}
        while in_flight:
            finished, _ = ray.wait(list(in_flight), num_returns=1)
            for reference in finished:
                request = in_flight.pop(reference)
                try:
                    payload = ray.get(reference)
                except ray.exceptions.RayError as error:
                    for other in in_flight:
                        ray.cancel(other)
                    cause = getattr(error, "cause", None) or error
                    raise UpcycleError(f"Contributor {request.contributor.name} failed on Ray (iteration "
                                       f"{request.iteration}): {type(cause).__name__}: "
                                       f"{str(cause).strip().splitlines()[0] if str(cause).strip() else ''} "
                                       "Finished contributions are kept; rerun to resume.") from None
                yield Contribution.model_validate_json(payload)


def make_workers(name: str, *, address: str | None = None, parallel: int = 1) -> Workers:
    """``local`` (fresh processes on this machine) or ``ray`` (the cluster at ``address``, or a new one)."""
    if name == "local":
        if address is not None:
            raise ConfigError("--ray-address only applies to --executor ray.")
        return LocalWorkers(parallel)
    if name == "ray":
        return RayWorkers(address)
    raise ConfigError(f"Unknown executor '{name}': use local or ray.")
