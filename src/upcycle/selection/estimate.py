"""Running an estimator by name (or a rank fusion of several joined by ``+``), with fallbacks and a budget in
seconds of the device's cost clock (CPU seconds on the CPU, wall seconds on an accelerator: see
:func:`~upcycle.selection.context.cost_clock`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import ConfigError, UpcycleError
from ..training.devices import describe_device, resolve_device
from .context import BudgetExhausted, CostMeter, EstimatorUnavailable, SelectionContext
from .estimators import ESTIMATORS, Estimator
from .estimators.combined import RankFusion


def get_estimator(name: str) -> Estimator:
    """A registered estimator by name, or the rank fusion of several joined by ``+`` (``logme+retrieval``)."""
    members = tuple(part.strip() for part in name.split("+"))
    unknown = [member for member in members if member not in ESTIMATORS]
    if unknown or not name:
        raise ConfigError(ESTIMATORS.unknown(name))
    if len(members) > 1:
        return RankFusion(members)
    return ESTIMATORS.get(name)()


def reads_sample(name: str) -> bool:
    """Whether estimator ``name``'s scores depend on the target sample, its size included (a fusion's, when one of
    its members' do): not the prior's, the few-shot proxy's (its own split), size's or random's."""
    return get_estimator(name).reads_sample  # an unknown name is a ConfigError here too


@dataclass(frozen=True)
class Estimate:
    """What one estimator said about one target: scores, what it cost, and which estimator really ran.

    ``seconds`` (per target) and ``amortized_seconds`` (once per candidate) are read from the cost clock of
    ``device``, which is what :func:`~upcycle.training.devices.describe_device` says (``cpu``, or
    ``cuda:0 (NVIDIA H200)``): CPU seconds on the CPU, wall seconds on an accelerator.
    """

    requested: str
    used: str
    scores: dict[str, float]
    seconds: float
    amortized_seconds: float
    device: str
    notes: tuple[str, ...]

    @property
    def cpu_seconds(self) -> float:
        """``seconds`` under its name from before costs were device-aware: CPU seconds only on the CPU."""
        return self.seconds


def estimate(
    name: str, context: SelectionContext, *, budget: float | None = None,
    on_fallback: Callable[[str], None] | None = None, device: str | None = None, follow_fallbacks: bool = True,
) -> Estimate:
    """Run estimator ``name`` on a fresh cost meter, following its fallbacks when it is unavailable (with
    ``follow_fallbacks=False``, :class:`EstimatorUnavailable` is raised instead).

    The work runs, and its cost is measured, on ``device`` (default: ``resolve_device()``, i.e.
    ``$UPCYCLE_DEVICE`` or auto, resolved once when the estimation starts). ``budget`` caps the per-target
    seconds of that device's cost clock (cached work counts at what it cost); an estimator that overruns it is
    abandoned for its fallback, and what it spent still counts.
    """
    device = resolve_device(device)
    spent, current, fallbacks = 0.0, name, []
    while True:
        estimator = get_estimator(current)
        limit = None if budget is None else budget - spent
        run = replace(context, meter=CostMeter(limit=limit, device=device), notes=[])
        try:
            scores = estimator.scores(run)
        except (EstimatorUnavailable, BudgetExhausted) as error:
            spent += run.meter.total
            message = f"{current} cannot score {context.target.name} ({error})"
            if estimator.fallback is None or not follow_fallbacks:
                raise EstimatorUnavailable(message + ("; no fallback left." if follow_fallbacks else ".")) from None
            fallbacks.append(f"{message}; falling back to {estimator.fallback}.")
            if on_fallback is not None:
                on_fallback(fallbacks[-1])
            current = estimator.fallback
            continue
        unscored = [c.name for c in context.candidates if c.fingerprint not in scores]
        if unscored:
            raise UpcycleError(f"Estimator {current} left candidates unscored: {', '.join(unscored)}.")
        return Estimate(name, current, scores, seconds=spent + run.meter.total,
                        amortized_seconds=run.meter.amortized_total, device=describe_device(device),
                        notes=tuple(fallbacks + run.notes))
