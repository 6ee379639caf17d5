"""Executors run finetune specs; :func:`run_specs` skips what the store already holds and records the rest.

An executor only turns specs into results. The driver (the caller of :func:`run_specs`) is the only writer
to the store, so results are recorded one at a time as they arrive: an interrupted run loses at most the
jobs in flight, and rerunning the same specs resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol as TypingProtocol

from .finetune import FinetuneResult, FinetuneSpec, ProgressCallback, run_finetune
from .store import Store


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
