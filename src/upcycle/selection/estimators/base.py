"""The estimator interface and its registry.

An estimator scores each candidate checkpoint for one target task: higher means "a better place to start
finetuning from". It never finetunes the candidates on the full target (that is the brute force it
replaces) and reports what it spent, in CPU seconds, through the context's :class:`CostMeter`. Each lives in
its own module and registers itself with :func:`register_estimator`.
"""

from __future__ import annotations

from typing import ClassVar

from ...registry import Registry
from ..context import EstimatorUnavailable, SelectionContext

__all__ = ["ESTIMATORS", "Estimator", "EstimatorUnavailable", "SelectionContext", "register_estimator"]


class Estimator:
    """Base class: subclasses set ``name``, ``summary`` (one line) and implement :meth:`scores`.

    ``fallback`` names the estimator to use instead when this one raises :class:`EstimatorUnavailable`.
    ``reads_sample`` is False where the scores do not depend on the target sample (its size included): the
    evaluation then runs the estimator once per target, whatever sample sizes it compares.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    fallback: ClassVar[str | None] = None
    reads_sample: ClassVar[bool] = True

    def scores(self, context: SelectionContext) -> dict[str, float]:
        """``{candidate fingerprint: score}``, higher is better; NaN where a candidate cannot be scored."""
        raise NotImplementedError


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator", hint=" (or several joined by '+')")


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return ESTIMATORS.register(cls.name, cls)
