"""Should I switch at all? The predicted gain of the top pick over the base, the recommendation, and how many
candidates ``--verify-top`` finetunes (``auto``, and within ``--budget``). Pure functions, plus the registry
through which an estimator whose scores are gains in points gives each candidate an interval.

Most estimators (LogME, the probe, kNN, ...) score on scales of their own: they order the candidates but say
nothing about how much a candidate beats the vanilla base. An estimator whose scores *are* predicted gains in
points over the base (the model prior; a learned ranker) registers a function that returns each candidate's 95%
interval of its gain on the target with :func:`register_gain_intervals`. When the ranking's estimator predicts
only an order, ``select`` asks :data:`GAIN_MODEL` for the gains (the ranking stays the estimator's), so that a
predicted gain and a switch-or-stay recommendation are printed whenever any stored bench or imported leaderboard
knows the candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .context import EstimatorUnavailable, SelectionContext
from .estimate import Estimate, estimate

# (context, {fingerprint: score = predicted gain in points}) -> {fingerprint: (low, high)}; a candidate left out,
# or given None, has no interval (too little evidence for one)
GainIntervals = Callable[[SelectionContext, dict[str, float]], dict[str, tuple[float, float] | None]]
GAIN_INTERVALS: dict[str, GainIntervals] = {}

SWITCH, STAY, UNCERTAIN, RANKING_ONLY = "switch", "stay", "uncertain", "ranking only"
# What predicts the gains when the ranking's estimator predicts only an order: the candidates' average gain on
# other targets, the signal that held on targets from unseen domains (issue 17), and free to compute
GAIN_MODEL = "prior"
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


def gain_model_estimate(context: SelectionContext) -> Estimate | None:
    """:data:`GAIN_MODEL`'s scores of the candidates (predicted gains in points), without fallbacks; None when it
    knows none of them. It costs a fraction of a second: no budget applies."""
    try:
        return estimate(GAIN_MODEL, context, follow_fallbacks=False)
    except EstimatorUnavailable:
        return None


@dataclass(frozen=True)
class Recommendation:
    """``action``: ``switch``, ``stay``, ``uncertain`` or ``ranking only`` (the estimator predicts no gain);
    ``message``: the sentence ``select`` prints."""

    action: str
    message: str


def recommend(top: str | None, base: str | None, forecast: GainForecast | None, *, estimator: str,
              best: tuple[str, GainForecast] | None = None) -> Recommendation:
    """What to do, from the predicted gains over the base.

    ``forecast`` is the top pick's predicted gain (None: unknown); ``estimator`` names what predicted the gains
    (with none predicted: what ranked). ``best`` is (name, forecast) of the candidate with the highest predicted
    gain when the gains come from another estimator than the ranking (:data:`GAIN_MODEL`); None when the ranking's
    own estimator predicted them, so that its top pick is the best predicted.

    * no gain predicted for any candidate: say so, and suggest verifying;
    * the best predicted gain <= 0: no candidate is predicted to beat the base: stay;
    * the top pick's interval lies above 0: switch to it;
    * otherwise (the interval includes 0, there is none, the top pick's gain is unknown, or another candidate is
      predicted better): uncertain, verify.
    """
    base = base or "the base"
    if top is None or (forecast is None and best is None):
        return Recommendation(RANKING_ONLY, f"{estimator} predicts a ranking, not a gain over {base}, and no stored "
                                            "bench or imported leaderboard knows these candidates: to learn whether "
                                            "switching pays, verify the top candidates (--verify-top auto)")
    leader, lead = (top, forecast) if best is None else best
    assert lead is not None
    if lead.gain <= 0:
        return Recommendation(STAY, f"stay with {base}: no candidate is predicted to beat it ({estimator})")
    if forecast is not None and forecast.interval is not None and forecast.interval[0] > 0:
        return Recommendation(SWITCH, f"switch to {top}: the 95% interval of its predicted gain over {base} lies "
                                      f"above 0 ({estimator})")
    if forecast is None:
        why = (f"{estimator} knows no gain of {top}; of the candidates it knows, {leader} is predicted best, "
               f"{lead.gain:+.1f} points")
    elif forecast.gain <= 0:
        why = f"{estimator} predicts {top} no gain, but {leader} {lead.gain:+.1f} points"
    elif forecast.interval is not None:
        why = f"the 95% interval of its predicted gain over {base} includes 0"
    else:
        why = f"its predicted gain over {base} has no interval (too few targets behind it)"
    auto = (f"the candidates whose intervals overlap {top}'s" if forecast is not None and forecast.interval
            is not None else f"the top {AUTO_FALLBACK}")
    return Recommendation(UNCERTAIN, f"uncertain: verify ({why}; --verify-top auto finetunes {auto})")


def auto_verify_top(ranked: Sequence[GainForecast | None] | None) -> tuple[int, str]:
    """K for ``--verify-top auto`` and the reason, from the ranked candidates' forecasts (best first).

    K = how many candidates' predicted-gain intervals overlap the top pick's (the top pick's own included; a
    candidate without an interval cannot be ruled out, so it counts), at least 1 and at most ``AUTO_MAX``; with no
    interval for the top pick (no gains predicted, or none known for it), ``AUTO_FALLBACK``.
    """
    scored = [forecast for forecast in (ranked or ()) if forecast is not None]
    if not ranked or ranked[0] is None or ranked[0].interval is None:
        k = min(AUTO_FALLBACK, max(len(ranked or ()), 1))
        return k, f"the top {k} (no predicted-gain interval of the top pick to choose by)"
    low, high = ranked[0].interval
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


def judge_advice(scores: Mapping[str, float], forecasts: Mapping[str, GainForecast] | None,
                 measured: Mapping[str, float], *, own: bool) -> dict[str, Any]:
    """The advice ``select`` would give, judged against measured gains: a pure function for the evaluation.

    ``scores``: the ranking estimator's score of each candidate (NaN: cannot say); ``forecasts``: predicted gains
    (the estimator's own when ``own``, else :data:`GAIN_MODEL`'s); ``measured``: each candidate's measured gain over
    the base in points. The top pick is the highest score (ties: the first in ``scores``' order). Returns
    ``advice`` (the action), ``top_gain`` (the top pick's measured gain), ``predicted_top_gain``, ``top_covered``
    (whether the top pick's 95% interval holds its measured gain; None without an interval) and ``advice_right``
    (switch: the top pick's measured gain > 0; stay: <= 0; None for uncertain and ranking only, which decide
    nothing).
    """
    names = [name for name in scores if name in measured and not math.isnan(scores[name])]
    if not names:
        return {"advice": None, "top_gain": math.nan, "predicted_top_gain": math.nan, "top_covered": None,
                "advice_right": None}
    top = max(names, key=lambda name: scores[name])  # max keeps the first of equal scores
    forecast = None if forecasts is None else forecasts.get(top)
    best = None
    if forecasts and not own:
        known = [name for name in scores if name in forecasts]
        best = max(((name, forecasts[name]) for name in known), key=lambda pair: pair[1].gain, default=None)
    action = recommend(top, None, forecast, estimator="", best=best).action
    gain = float(measured[top])
    covered = None if forecast is None or forecast.interval is None else bool(
        forecast.interval[0] <= gain <= forecast.interval[1])
    right = {SWITCH: gain > 0, STAY: gain <= 0}.get(action)
    return {"advice": action, "top_gain": gain, "predicted_top_gain": math.nan if forecast is None else forecast.gain,
            "top_covered": covered, "advice_right": right}
