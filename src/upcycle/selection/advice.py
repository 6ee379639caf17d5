"""Should I switch at all? The predicted gain of the top pick over the base, the recommendation, and how many
candidates ``--verify-top`` finetunes (``auto``, and within ``--budget``). Pure functions, plus the registry
through which an estimator whose scores are gains in points gives each candidate an interval.

Most estimators (LogME, the probe, kNN, ...) score on scales of their own: they order the candidates but say
nothing about how much a candidate beats the vanilla base. An estimator whose scores *are* predicted gains in
points over the base (the model prior; a learned ranker) registers a function that returns each candidate's 95%
interval with :func:`register_gain_intervals`; only then does ``select`` print a predicted gain and recommend
switching or staying.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .context import SelectionContext
from .estimate import Estimate

# (context, {fingerprint: score = predicted gain in points}) -> {fingerprint: (low, high)}; a candidate left out,
# or given None, has no interval (too little evidence for one)
GainIntervals = Callable[[SelectionContext, dict[str, float]], dict[str, tuple[float, float] | None]]
GAIN_INTERVALS: dict[str, GainIntervals] = {}

SWITCH, STAY, UNCERTAIN, RANKING_ONLY = "switch", "stay", "uncertain", "ranking only"
AUTO_MAX = 5  # --verify-top auto never verifies more candidates than this
AUTO_FALLBACK = 2  # ... and verifies this many when the estimator gives no intervals


def register_gain_intervals(estimator: str) -> Callable[[GainIntervals], GainIntervals]:
    """Decorator: ``estimator``'s scores are predicted gains in points over the base, and the decorated function
    gives each candidate's 95% interval of that gain."""
    def register(function: GainIntervals) -> GainIntervals:
        GAIN_INTERVALS[estimator] = function
        return function
    return register


@dataclass(frozen=True)
class GainForecast:
    """A candidate's predicted gain over the base, in points, with its 95% interval (None: no interval)."""

    gain: float
    interval: tuple[float, float] | None = None


def forecast_gains(result: Estimate, context: SelectionContext) -> dict[str, GainForecast] | None:
    """``{fingerprint: GainForecast}`` of the scored candidates when the estimator that ran (``result.used``, so
    not a fallback's) predicts gains; None when it predicts only an order."""
    intervals_of = GAIN_INTERVALS.get(result.used)
    if intervals_of is None:
        return None
    intervals = intervals_of(context, result.scores)
    return {fingerprint: GainForecast(score, intervals.get(fingerprint))
            for fingerprint, score in result.scores.items() if not math.isnan(score)}


@dataclass(frozen=True)
class Recommendation:
    """``action``: ``switch``, ``stay``, ``uncertain`` or ``ranking only`` (the estimator predicts no gain);
    ``message``: the sentence ``select`` prints."""

    action: str
    message: str


def recommend(top: str | None, base: str | None, forecast: GainForecast | None, *, estimator: str) -> Recommendation:
    """What to do, from the top pick's predicted gain over the base.

    * no forecast (the estimator predicts a ranking, not a gain): say so, and suggest verifying;
    * predicted gain <= 0: the top pick is the best predicted, so no candidate is predicted to beat the base: stay;
    * the interval's lower bound > 0: switch to the top pick;
    * otherwise (the interval includes 0, or there is none): uncertain, verify.
    """
    base = base or "the base"
    if forecast is None or top is None:
        return Recommendation(RANKING_ONLY, f"{estimator} predicts a ranking, not a gain over {base}: to learn "
                                            "whether switching pays, verify the top candidates (--verify-top auto)")
    if forecast.gain <= 0:
        return Recommendation(STAY, f"stay with {base}: no candidate is predicted to beat it")
    if forecast.interval is not None and forecast.interval[0] > 0:
        return Recommendation(SWITCH, f"switch to {top}: the 95% interval of its predicted gain over {base} lies "
                                      "above 0")
    why = (f"the interval of its predicted gain over {base} includes 0" if forecast.interval is not None
           else f"its predicted gain over {base} has no interval (too few targets behind it)")
    return Recommendation(UNCERTAIN, f"uncertain: verify ({why}; --verify-top auto finetunes the candidates "
                                     f"whose intervals overlap {top}'s)")


def auto_verify_top(ranked: Sequence[GainForecast | None] | None) -> tuple[int, str]:
    """K for ``--verify-top auto`` and the reason, from the ranked candidates' forecasts (best first).

    K = how many candidates' predicted-gain intervals overlap the top pick's (the top pick's own included; a
    candidate without an interval cannot be ruled out, so it counts), at least 1 and at most ``AUTO_MAX``; with no
    intervals (the estimator predicts only an order, or the top pick has none), ``AUTO_FALLBACK``.
    """
    scored = [forecast for forecast in (ranked or ()) if forecast is not None]
    if not scored or scored[0].interval is None:
        k = min(AUTO_FALLBACK, max(len(ranked or ()), 1))
        return k, f"the top {k} (no predicted-gain intervals to choose by)"
    low, high = scored[0].interval
    overlapping = sum(1 for forecast in scored
                      if forecast.interval is None or (forecast.interval[0] <= high and forecast.interval[1] >= low))
    k = max(1, min(AUTO_MAX, overlapping))
    capped = f", at most {AUTO_MAX}" if overlapping > AUTO_MAX else ""
    return k, f"the top {k} ({overlapping} candidate(s) whose predicted-gain intervals overlap the top pick's{capped})"


def verifications_within_budget(k: int, *, left: float, base_seconds: float, candidate_seconds: Sequence[float]
                                ) -> int:
    """The largest K' <= ``k`` such that verifying the base and the top K' fits in ``left`` seconds.

    ``candidate_seconds`` are the ranked candidates' verification costs (all seeds; 0 when already in the store),
    best first; the base is always verified with them (without it no gain can be measured), so when it does not
    fit, K' = 0: nothing is verified.
    """
    spent = base_seconds
    if spent > left:
        return 0
    fitted = 0
    for seconds in list(candidate_seconds)[:k]:
        if spent + seconds > left:
            break
        spent, fitted = spent + seconds, fitted + 1
    return fitted
