"""The recycling benchmark: which checkpoints are better starting points than the vanilla base?

A :class:`Bench` is the grid: a base checkpoint, candidate checkpoints of the same architecture, target
tasks, seeds and one protocol. Every (candidate or base, target, seed) cell is one :class:`FinetuneSpec`;
cells where a candidate's source data overlaps the target are left out. The definition is saved in the
store under the bench's name, so the leaderboard and the analysis are rebuilt from the store alone, and a
rerun (after a crash, or with more candidates, targets or seeds) only trains the missing cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from ..checkpoints import Checkpoint, CheckpointRef, resolve_checkpoint
from ..errors import ConfigError
from ..execute import Executor, run_specs
from ..protocols import Protocol, get_protocol
from ..specs import FinetuneResult, FinetuneSpec
from ..store import Store, ZooEntry
from ..tasks import Suite, TaskRef, load_suite, load_task
from ..tasks.suites import OVERLAP_GROUPS
from ..training import embed, linear_probe_score
from ..zoo import register, resolve_candidate

GRID_COLUMNS = ["candidate", "fingerprint", "source_task", "is_base", "target", "seed", "metric", "score"]


class Candidate(BaseModel):
    """A checkpoint in the grid and the task it was finetuned on (None for a base model)."""

    model_config = ConfigDict(frozen=True)

    checkpoint: CheckpointRef
    source_task: str | None = None


class Bench(BaseModel):
    """One architecture's grid. ``base`` is the vanilla model every gain is measured against."""

    model_config = ConfigDict(frozen=True)

    name: str
    arch: str
    base: Candidate
    candidates: tuple[Candidate, ...]
    targets: tuple[TaskRef, ...]
    seeds: tuple[int, ...]
    protocol: Protocol
    overlap_groups: tuple[tuple[str, ...], ...] = ()

    @property
    def suite(self) -> Suite:
        return Suite(self.name, tuple(t.name for t in self.targets), tuple(map(frozenset, self.overlap_groups)))

    def eligible(self, candidate: Candidate, target: TaskRef) -> bool:
        """A candidate is never scored on a target whose data it was trained on."""
        return not self.suite.overlaps(candidate.source_task, target.name)

    def cells(self) -> Iterator[tuple[Candidate, TaskRef, int]]:
        """Seed-major order, so that an interrupted run leaves whole seeds of the grid, base first."""
        for seed in self.seeds:
            for target in self.targets:
                for candidate in (self.base, *self.candidates):
                    if self.eligible(candidate, target):
                        yield candidate, target, seed

    def spec(self, candidate: Candidate, target: TaskRef, seed: int) -> FinetuneSpec:
        return FinetuneSpec(base=candidate.checkpoint, task=target, seed=seed, protocol=self.protocol)

    def specs(self) -> list[FinetuneSpec]:
        return [self.spec(*cell) for cell in self.cells()]


def _candidate(entry: ZooEntry) -> Candidate:
    return Candidate(checkpoint=entry.ref(), source_task=entry.source_task)


def plan_bench(
    store: Store,
    *,
    base: str | Checkpoint = "minilm",
    suite: str | Suite = "quick",
    seeds: int = 2,
    protocol: str | Protocol = "quick",
    overrides: dict[str, Any] | None = None,
    candidates: list[str] | None = None,
    name: str | None = None,
) -> Bench:
    """Build a bench (loading each target once to fingerprint it), save its definition and return it.

    Candidates default to every zoo checkpoint of the base's architecture. A named candidate of another
    architecture is an error: gains are only comparable against the base of the same architecture.
    """
    chosen_suite = suite if isinstance(suite, Suite) else load_suite(suite)
    chosen_protocol = get_protocol(protocol, overrides)
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1.")
    base_checkpoint = base if isinstance(base, Checkpoint) else resolve_checkpoint(base)
    base_entry = register(store, base_checkpoint, only_if_new=True)
    arch = base_entry.arch
    if candidates:
        entries = [resolve_candidate(store, reference) for reference in candidates]
        foreign = [f"{entry.name} ({entry.arch})" for entry in entries if entry.arch != arch]
        if foreign:
            raise ConfigError(
                f"Candidates of another architecture than the base {base_entry.name} ({arch}): "
                f"{', '.join(foreign)}. Bench each architecture against its own base."
            )
    else:
        entries = [entry for entry in store.checkpoints() if entry.arch == arch]
    unique = {entry.fingerprint: entry for entry in entries if entry.fingerprint != base_entry.fingerprint}
    targets = []
    for target in chosen_suite.targets:
        task = load_task(target)
        store.put_task(fingerprint=task.fingerprint, name=task.name, source=task.source, kind=task.kind,
                       num_labels=task.num_labels, sizes=task.sizes())
        targets.append(TaskRef.of(task))
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"Two targets share a task name ({', '.join(names)}); names identify targets.")
    bench = Bench(
        name=name or f"{chosen_suite.name}-{base_entry.name}",
        arch=arch,
        base=Candidate(checkpoint=_candidate(base_entry).checkpoint),
        candidates=tuple(sorted((_candidate(e) for e in unique.values()), key=lambda c: c.checkpoint.name)),
        targets=tuple(targets),
        seeds=tuple(range(seeds)),
        protocol=chosen_protocol,
        overlap_groups=tuple(tuple(sorted(group)) for group in chosen_suite.overlap_groups),
    )
    store.put_bench(bench.name, bench.arch, bench.model_dump_json())
    return bench


def load_bench(store: Store, name: str | None = None) -> Bench:
    """A saved bench by name, or the most recently updated one."""
    saved = store.benches()
    if not saved:
        raise ConfigError("No bench in this database yet: run `upcycle bench` first (or pass the right --db).")
    if name is None:
        return Bench.model_validate_json(saved[0][2])
    for bench_name, _, definition in saved:
        if bench_name == name:
            return Bench.model_validate_json(definition)
    raise ConfigError(f"No bench named '{name}'; saved benches: {', '.join(row[0] for row in saved)}.")


def benches_from_results(store: Store) -> list[Bench]:
    """Benches nobody planned, read off the stored finetunes (``select --verify-top``, single ``finetune`` runs):
    for each vanilla base (a zoo checkpoint without a recorded base that another checkpoint descends from) and
    protocol, the targets on which both it and another checkpoint of its architecture were finetuned, where some of
    those cells belong to no saved bench. The seeds are those the base has there; the built-in overlap groups apply.
    Named ``results-<base>`` (``-<protocol>`` added when a base has several). Returned, never saved: views only.
    """
    saved = store.benches()
    covered = {spec.key() for _, _, definition in saved for spec in Bench.model_validate_json(definition).specs()}
    taken = {name for name, _, _ in saved}
    entries = store.checkpoints()
    parents = {entry.base_fingerprint for entry in entries if entry.base_fingerprint}
    benches = []
    for root in (e for e in entries if e.base_fingerprint is None and e.fingerprint in parents):
        groups: dict[str, dict[str, Any]] = {}  # protocol (without its name) -> targets, seeds, cells
        for row in store.results_for(root.fingerprint):
            spec = FinetuneSpec.model_validate_json(row["spec"])
            group = groups.setdefault(spec.protocol.model_dump_json(exclude={"name"}), {
                "protocol": spec.protocol, "targets": {}, "seeds": {}, "candidates": {}, "fresh": set()})
            group["targets"].setdefault(spec.task.fingerprint, spec.task)
            group["seeds"].setdefault(spec.task.fingerprint, set()).add(spec.seed)
            if spec.key() not in covered:
                group["fresh"].add(spec.task.fingerprint)
        for other in (e for e in entries if e.arch == root.arch and e.fingerprint != root.fingerprint):
            for row in store.results_for(other.fingerprint):
                spec = FinetuneSpec.model_validate_json(row["spec"])
                group = groups.get(spec.protocol.model_dump_json(exclude={"name"}))
                if group is None or spec.task.fingerprint not in group["targets"]:
                    continue
                group["candidates"].setdefault(spec.task.fingerprint, {})[other.fingerprint] = other
                if spec.key() not in covered:
                    group["fresh"].add(spec.task.fingerprint)
        for group in groups.values():
            chosen = [fp for fp in group["targets"] if fp in group["candidates"] and fp in group["fresh"]]
            if not chosen:
                continue
            targets, names = [], set()
            for fingerprint in sorted(chosen, key=lambda fp: group["targets"][fp].name):
                task = group["targets"][fingerprint]
                if task.name in names:  # two tasks of one name: names identify targets in the views
                    task = task.model_copy(update={"name": f"{task.name} [{fingerprint[:8]}]"})
                names.add(task.name)
                targets.append(task)
            candidates = {fp: entry for target in chosen for fp, entry in group["candidates"][target].items()}
            name = f"results-{root.name}" + (f"-{group['protocol'].name}" if len(groups) > 1 else "")
            while name in taken:
                name += "-stored"
            taken.add(name)
            benches.append(Bench(
                name=name, arch=root.arch, base=Candidate(checkpoint=root.ref()),
                candidates=tuple(sorted((_candidate(e) for e in candidates.values()), key=lambda c: c.checkpoint.name)),
                targets=tuple(targets),
                seeds=tuple(sorted(set().union(*(group["seeds"][fp] for fp in chosen)))),
                protocol=group["protocol"],
                overlap_groups=tuple(tuple(sorted(g)) for g in OVERLAP_GROUPS),
            ))
    return benches


def run_bench(
    bench: Bench, store: Store, executor: Executor | None = None
) -> Iterator[tuple[FinetuneResult, int, int]]:
    """Train the cells not stored yet; yield ``(result, done, total)`` as each one is recorded."""
    specs = bench.specs()
    done = sum(1 for key in store.scores([s.key() for s in specs]))
    for result in run_specs(specs, store, executor):
        done += 1
        yield result, done, len(specs)


def grid_frame(bench: Bench, store: Store) -> pd.DataFrame:
    """The bench's stored cells as tidy rows (``GRID_COLUMNS``); cells not trained yet are absent.

    Scores are joined by spec key, i.e. by (checkpoint fingerprint, task fingerprint, seed, protocol):
    never by position in a list.
    """
    cells = list(bench.cells())
    keys = [bench.spec(*cell).key() for cell in cells]
    stored = store.scores(keys)
    rows = []
    for (candidate, target, seed), key in zip(cells, keys):
        if key in stored:
            metric, score = stored[key]
            reference = candidate.checkpoint
            is_base = reference.fingerprint == bench.base.checkpoint.fingerprint
            rows.append((reference.name, reference.fingerprint, candidate.source_task, is_base,
                         target.name, seed, metric, score))
    return pd.DataFrame(rows, columns=GRID_COLUMNS).astype({"is_base": bool, "seed": int, "score": float})


def expected_cells(bench: Bench) -> dict[str, set[tuple[str, int]]]:
    """``{fingerprint: {(target, seed), ...}}``: the cells a fully tested candidate has."""
    expected: dict[str, set[tuple[str, int]]] = {}
    for candidate, target, seed in bench.cells():
        expected.setdefault(candidate.checkpoint.fingerprint, set()).add((target.name, seed))
    return expected


def linear_probes(bench: Bench, target: str, *, max_examples: int = 500, seed: int = 0) -> dict[str, float]:
    """Cross-validated linear-probe accuracy on ``target``'s training data for the base and every candidate
    whose source data does not overlap it: ``{fingerprint: accuracy}``. One forward pass per checkpoint."""
    refs = {t.name: t for t in bench.targets}
    task = refs[target].load() if target in refs else load_task(target)
    if task.kind != "classification":
        raise ConfigError(f"The probe target must be a classification task; {task.name} is {task.kind}.")
    split = task.subsample(max_examples, None, seed=seed).splits["train"]
    scores = {}
    for candidate in (bench.base, *bench.candidates):
        if not bench.suite.overlaps(candidate.source_task, task.name):
            features = embed(candidate.checkpoint.resolve(), split, max_length=bench.protocol.max_length)
            scores[candidate.checkpoint.fingerprint] = linear_probe_score(features, np.asarray(split.labels), seed=seed)
    return scores
