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

from ..errors import UpcycleError
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
                    raise UpcycleError(f"The worker of {_label(request)} died. Finished contributions are kept; "
                                       "rerun the same command to resume.") from None
                except Exception as error:  # the worker's own exception, re-raised here by the pool
                    for other in futures:
                        other.cancel()
                    raise UpcycleError(f"{_label(request)} failed: {type(error).__name__}: {error}") from None
                yield Contribution.model_validate_json(payload)


class RayWorkers:
    """Every contribution as a Ray task (one CPU, retried if its worker dies), through
    :meth:`upcycle.execute.RayExecutor.map`.

    The base and the output folder are paths, so the repository folder must be visible to every node (one
    machine, or a shared disk), as for :class:`upcycle.execute.RayExecutor`.
    """

    def __init__(self, address: str | None = None):
        from ..execute import RayExecutor

        self.ray = RayExecutor(address)

    def run(self, requests: list[ContributionRequest]) -> Iterator[Contribution]:
        for _, payload in self.ray.map(contribute_json, requests, _label):
            yield Contribution.model_validate_json(payload)


def _label(request: ContributionRequest) -> str:
    return f"contributor {request.contributor.name} (iteration {request.iteration})"


def make_workers(name: str, *, address: str | None = None, parallel: int = 1) -> Workers:
    """``local`` (fresh processes on this machine) or ``ray`` (the cluster at ``address``, or a new one)."""
    from ..execute import check_executor

    check_executor(name, address)
    return LocalWorkers(parallel) if name == "local" else RayWorkers(address)
