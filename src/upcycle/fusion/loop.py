"""The ColD Fusion loop (Don-Yehiya et al., 2023): contributors finetune the shared base, the repository fuses.

Iteration i draws K contributors (seeded, so a rerun draws the same ones); each finetunes the current base
on its own data in its own worker and sends back weights; the repository checks them, fuses the bodies with
the merge engine (task heads dropped; a uniform average by default) into the next base and, on the first,
every ``eval_every``-th and the last iteration, finetunes it on held-out targets to measure its gain over
the vanilla base. With ``rollback`` an iteration whose gain falls more than ``tolerance`` points below the
current base's is rejected and the next iteration starts again from the current base.

Everything is kept under the run folder, and ``fusion.json`` is rewritten atomically after each step::

    OUT/fusion.json                          the run's definition and one record per finished iteration
    OUT/iter-001/contributors/<name>/        each contributor's finetuned weights (written atomically)
    OUT/iter-001/fused/                      the fused base (written atomically)

A crash anywhere resumes with the same command: finished contributions, fusions and evaluations are found
and reused, only the missing work runs.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..checkpoints import Checkpoint, CheckpointRef, require_finite_weights, resolve_checkpoint
from ..errors import CheckpointError, ConfigError, MergeError, UpcycleError
from ..execute import Executor
from ..merging import merge
from ..merging.methods import FUSION_METHODS, FUSION_PARAMETERS, MODEL_PARAMETERS
from ..protocols import Protocol
from ..store import Store
from ..tasks import Suite
from ..zoo import register
from .contributor import (
    Contribution,
    ContributionRequest,
    Contributor,
    finished_contribution,
    run_contributions,
)

STATE_FILE = "fusion.json"
Log = Callable[[str], None]


class FusionConfig(BaseModel):
    """One fusion run. Everything but ``iterations`` must match to resume a run folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    base: CheckpointRef
    contributors: tuple[Contributor, ...] = Field(min_length=2)
    iterations: int = Field(ge=1)
    per_iteration: int = Field(ge=1)
    seed: int = 0
    protocol: Protocol
    merge_method: str = "average"
    merge_parameters: dict[str, float] = Field(default_factory=dict)
    eval_targets: tuple[str, ...] = ()
    eval_every: int = Field(default=1, ge=1)
    eval_seeds: int = Field(default=2, ge=1)
    eval_protocol: Protocol
    rollback: bool = False
    tolerance: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> FusionConfig:
        names = [c.name for c in self.contributors]
        if len(set(names)) != len(names):
            raise ValueError(f"two contributors share a name ({', '.join(names)})")
        if self.per_iteration > len(self.contributors):
            raise ValueError(f"per_iteration {self.per_iteration} exceeds the {len(names)} contributors")
        if self.merge_method not in FUSION_METHODS:
            raise ValueError(f"merge_method must be one of {sorted(FUSION_METHODS)}, got {self.merge_method}")
        unknown = sorted(set(self.merge_parameters) - FUSION_PARAMETERS)
        if unknown:  # caught here, not after the contributors have trained
            raise ValueError(f"unknown merge parameter(s) {unknown}; known: {sorted(FUSION_PARAMETERS)}")
        suite = Suite("fusion", self.eval_targets)
        seen = [(c, Path(t).name) for c in names for t in self.eval_targets if suite.overlaps(c, Path(t).name)]
        if seen:
            pairs = ", ".join(f"{c} and {t}" for c, t in seen)
            raise ValueError(f"evaluation targets must be held out from every contributor: {pairs} share data")
        if self.rollback and not self.eval_targets:
            raise ValueError("rollback needs evaluation targets to judge an iteration by")
        return self

    def draw(self, iteration: int) -> list[Contributor]:
        """The contributors of ``iteration`` (1-based): K of them, seeded by (seed, iteration), in list order."""
        rng = np.random.default_rng([self.seed, iteration])
        chosen = sorted(rng.choice(len(self.contributors), self.per_iteration, replace=False).tolist())
        return [self.contributors[i] for i in chosen]

    def evaluates(self, iteration: int) -> bool:
        """Whether ``iteration``'s fused base is evaluated: the first (one-shot fusing), every ``eval_every``-th
        and the last."""
        return iteration == 1 or iteration % self.eval_every == 0 or iteration == self.iterations

    def contributor_seed(self, iteration: int, contributor: Contributor) -> int:
        return self.seed * 1_000_000 + iteration * 1_000 + self.contributors.index(contributor)

    def resumable_with(self, other: FusionConfig) -> bool:
        return self.model_dump(exclude={"iterations"}) == other.model_dump(exclude={"iterations"})


class IterationRecord(BaseModel):
    """A finished iteration: who contributed, what was fused, how it scored, whether it became the base."""

    iteration: int
    base_fingerprint: str
    contributors: list[str]
    rejected: dict[str, str] = Field(default_factory=dict)
    fused_path: str
    fused_fingerprint: str
    avg_gain: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    accepted: bool = True


class FusionState(BaseModel):
    config: FusionConfig
    iterations: list[IterationRecord] = Field(default_factory=list)

    def current_base(self) -> tuple[str, str]:
        """(path, fingerprint) of the base the next iteration starts from: the last accepted fusion."""
        accepted = [r for r in self.iterations if r.accepted]
        if not accepted:
            return self.config.base.reference, self.config.base.fingerprint
        return accepted[-1].fused_path, accepted[-1].fused_fingerprint

    def current_gain(self) -> float:
        """The last evaluated gain among accepted iterations (the vanilla base's is 0 by definition): what the
        rollback gate compares a new iteration with."""
        evaluated = [r.avg_gain for r in self.iterations if r.accepted and r.avg_gain is not None]
        return evaluated[-1] if evaluated else 0.0


def load_state(out: Path, config: FusionConfig) -> FusionState:
    """The run folder's state, or a fresh one; a folder holding a different run is an error."""
    file = out / STATE_FILE
    if not file.exists():
        return FusionState(config=config)
    try:
        state = FusionState.model_validate_json(file.read_text())
    except ValueError as error:
        raise ConfigError(f"{file}: not a readable fusion state ({str(error).splitlines()[0]}); "
                          "move it away to start over.") from None
    if not state.config.resumable_with(config):
        raise ConfigError(f"{out} holds another fusion run (its settings differ); use another --out to start a "
                          "new one, or the same settings to resume it.")
    return state.model_copy(update={"config": config})


def save_state(out: Path, state: FusionState) -> None:
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{STATE_FILE}.tmp"
    temporary.write_text(state.model_dump_json(indent=2) + "\n")
    os.replace(temporary, out / STATE_FILE)


def run_fusion(config: FusionConfig, out: str | Path, executor: Executor, *, store: Store | None = None,
               evaluate: Callable[[FusionState, int], tuple[float, float, float]] | None = None,
               log: Log = lambda message: None) -> FusionState:
    """Run (or resume) the loop to ``config.iterations``; returns the state with one record per iteration.

    Contributors run as jobs of ``executor`` (:class:`~upcycle.execute.ProcessExecutor` keeps their data out
    of this process; :class:`~upcycle.execute.RayExecutor` spreads them over a cluster).

    ``evaluate(state, iteration)`` returns (average gain, CI low, CI high) in points for the iteration's
    fused base; it is called on the iterations :meth:`FusionConfig.evaluates`. ``store``, when given, gets
    every fused base registered in its zoo.
    """
    out = Path(out).resolve()
    state = load_state(out, config)
    if store is not None:
        _check_zoo_names(state, store)
    for iteration in range(len(state.iterations) + 1, config.iterations + 1):
        record = _iteration(state, out, iteration, executor, log)
        if store is not None:
            register(store, resolve_checkpoint(record.fused_path), name=f"{config.name}-iter{iteration}")
        if evaluate is not None and config.evaluates(iteration):
            gain, low, high = evaluate(state.model_copy(update={"iterations": [*state.iterations, record]}), iteration)
            record = record.model_copy(update={"avg_gain": gain, "ci_low": low, "ci_high": high})
            if config.rollback and gain < state.current_gain() - config.tolerance:
                record = record.model_copy(update={"accepted": False})
                log(f"iteration {iteration}: gain {gain:+.2f} is below the current base's "
                    f"{state.current_gain():+.2f}; rolled back")
        state.iterations.append(record)
        save_state(out, state)
    return state


def _check_zoo_names(state: FusionState, store: Store) -> None:
    """Fused bases are registered as ``NAME-iterN``: refuse to start if another run's bases hold those names."""
    ours = {r.fused_fingerprint for r in state.iterations}
    pattern = re.compile(rf"{re.escape(state.config.name)}-iter\d+")
    taken = [e for e in store.checkpoints() if pattern.fullmatch(e.name) and e.fingerprint not in ours]
    if taken:
        raise ConfigError(f"The zoo already has {taken[0].name} ({taken[0].fingerprint[:12]}, {taken[0].path}) from "
                          f"another fusion run named '{state.config.name}'; choose another --name.")


def _iteration(state: FusionState, out: Path, iteration: int, executor: Executor, log: Log) -> IterationRecord:
    config = state.config
    base_path, base_fingerprint = state.current_base()
    base = CheckpointRef(reference=base_path, name=Path(base_path).name, fingerprint=base_fingerprint,
                         model_type=config.base.model_type)
    folder = out / f"iter-{iteration:03d}"
    _sweep_partials(folder)
    requests = [ContributionRequest(contributor=c, base=base, protocol=config.protocol,
                                    seed=config.contributor_seed(iteration, c),
                                    out=str(folder / "contributors" / c.name), iteration=iteration)
                for c in config.draw(iteration)]
    contributions: dict[str, Contribution] = {}
    todo = []
    for request in requests:
        done = finished_contribution(request)
        if done is not None:
            contributions[request.contributor.name] = done
        else:
            todo.append(request)
    log(f"iteration {iteration}: {', '.join(r.contributor.name for r in requests)} "
        f"({len(requests) - len(todo)} already contributed, {len(todo)} to train)")
    for contribution in run_contributions(executor, todo):
        contributions[contribution.contributor] = contribution
        log(f"iteration {iteration}: {contribution.contributor} contributed "
            f"({contribution.n_train} examples, {contribution.train_seconds:.0f}s, "
            f"worker pid {contribution.worker_pid})")
    ordered = [contributions[r.contributor.name] for r in requests]
    accepted, rejected = _screen(ordered, base_fingerprint)
    for name, reason in rejected.items():
        log(f"iteration {iteration}: rejected {name}: {reason}")
    fused = fuse(config, base_path, accepted, folder / "fused")
    log(f"iteration {iteration}: fused {len(accepted)} contributions into {fused.path}")
    return IterationRecord(iteration=iteration, base_fingerprint=base_fingerprint,
                           contributors=[c.contributor for c in accepted], rejected=rejected,
                           fused_path=str(fused.path), fused_fingerprint=fused.fingerprint)


def _sweep_partials(folder: Path) -> None:
    """Remove what a killed run left half-written (atomic writes stage in ``.<name>.partial-*`` folders)."""
    for partial in folder.glob("**/.*.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _screen(contributions: list[Contribution], base_fingerprint: str) -> tuple[list[Contribution], dict[str, str]]:
    """Keep the contributions that load, descend from this iteration's base and hold only finite weights."""
    accepted, rejected = [], {}
    for contribution in contributions:
        try:
            checkpoint = resolve_checkpoint(contribution.checkpoint_path)
            if (checkpoint.provenance or {}).get("base_fingerprint") != base_fingerprint:
                raise MergeError("it was not finetuned from this iteration's base")
            require_finite_weights(checkpoint)
        except (CheckpointError, MergeError) as error:
            rejected[contribution.contributor] = str(error)
            continue
        accepted.append(contribution)
    if not accepted:
        raise UpcycleError(f"No usable contribution this iteration: {rejected}")
    return accepted, rejected


def merge_config(config: FusionConfig, base_path: str, models: list[str]) -> dict[str, Any]:
    """The merge engine's YAML (as a dict) for one fusion: uniform weights unless parameters say otherwise."""
    method = FUSION_METHODS[config.merge_method].name
    per_model = {k: v for k, v in config.merge_parameters.items() if k in MODEL_PARAMETERS}
    per_method = {k: v for k, v in config.merge_parameters.items() if k not in MODEL_PARAMETERS}
    spec: dict[str, Any] = {"merge_method": method, "models": [{"model": m, "parameters": dict(per_model)}
                                                               for m in models], "seed": config.seed}
    if per_method:
        spec["parameters"] = per_method
    if FUSION_METHODS[config.merge_method].needs_base:
        spec["base_model"] = base_path
    return spec


def fuse(config: FusionConfig, base_path: str, contributions: list[Contribution], out: Path) -> Checkpoint:
    """Merge the contributions into ``out``, or return the fusion already there if it was made from exactly
    these weights (by fingerprint, from its provenance)."""
    if out.exists():
        try:
            existing = resolve_checkpoint(out)
            inputs = sorted(item["fingerprint"] for item in (existing.provenance or {}).get("inputs", []))
            if inputs == sorted(c.fingerprint for c in contributions):
                return existing
        except CheckpointError:
            pass
    return merge(merge_config(config, base_path, [c.checkpoint_path for c in contributions]), out, overwrite=True)
