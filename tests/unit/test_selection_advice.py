"""Should I switch at all? The recommendation, --verify-top auto's K and the budget cut as pure functions, and
what select prints and returns for them, on hand-built selections (no model)."""

from __future__ import annotations

import pytest

from upcycle.selection.advice import (
    RANKING_ONLY,
    STAY,
    SWITCH,
    UNCERTAIN,
    GainForecast,
    auto_verify_top,
    judge_advice,
    recommend,
    verifications_within_budget,
)


@pytest.mark.parametrize("forecast, action, words", [
    (GainForecast(2.0, (0.5, 3.5)), SWITCH,
     "switch to minilm-sst2: the 95% interval of its predicted gain over minilm lies above 0 (prior)"),
    (GainForecast(0.0, (-1.0, 1.0)), STAY, "stay with minilm: no candidate is predicted to beat it"),
    (GainForecast(-0.4, (-2.0, 0.3)), STAY, "stay with minilm: no candidate is predicted to beat it"),
    (GainForecast(1.0, (-0.5, 2.5)), UNCERTAIN,
     "uncertain: verify (the 95% interval of its predicted gain over minilm includes 0; --verify-top auto "
     "finetunes the candidates whose intervals overlap minilm-sst2's)"),
    (GainForecast(1.0, None), UNCERTAIN, "uncertain: verify (its predicted gain over minilm has no interval (too few "
                                         "targets behind it); --verify-top auto finetunes the top 2)"),
    (None, RANKING_ONLY, "prior predicts a ranking, not a gain over minilm, and no stored bench or imported "
                         "leaderboard knows these candidates"),
])
def test_switch_stay_or_verify(forecast, action, words):
    advice = recommend("minilm-sst2", "minilm", forecast, estimator="prior")
    assert advice.action == action and words in advice.message, advice
    assert "the base" in recommend("minilm-sst2", None, forecast, estimator="prior").message


@pytest.mark.parametrize("forecast, best, action, words", [
    # the ranking's top pick is also the gain model's best
    (GainForecast(2.0, (0.5, 3.5)), ("minilm-sst2", GainForecast(2.0, (0.5, 3.5))), SWITCH, "switch to minilm-sst2"),
    # the gain model knows no gain of the top pick, but another candidate is predicted to help
    (None, ("minilm-mrpc", GainForecast(1.5, (0.2, 2.8))), UNCERTAIN,
     "uncertain: verify (prior knows no gain of minilm-sst2; of the candidates it knows, minilm-mrpc is predicted "
     "best, +1.5 points; --verify-top auto finetunes the top 2)"),
    # the top pick is predicted to lose, another to gain
    (GainForecast(-1.0, (-2.0, 0.0)), ("minilm-mrpc", GainForecast(1.5, (0.2, 2.8))), UNCERTAIN,
     "uncertain: verify (prior predicts minilm-sst2 no gain, but minilm-mrpc +1.5 points"),
    # no candidate the gain model knows is predicted to beat the base
    (None, ("minilm-mrpc", GainForecast(-0.5, (-2.0, 1.0))), STAY,
     "stay with minilm: no candidate is predicted to beat it (prior)"),
])
def test_the_gains_of_another_estimator_than_the_rankings(forecast, best, action, words):
    advice = recommend("minilm-sst2", "minilm", forecast, estimator="prior", best=best)
    assert advice.action == action and words in advice.message, advice


def test_verify_top_auto_counts_the_intervals_that_overlap_the_top_picks():
    top = GainForecast(3.0, (1.0, 5.0))
    ranked = [top, GainForecast(2.0, (0.5, 3.0)), GainForecast(0.5, (-1.0, 0.9)), GainForecast(0.0, (-3.0, 1.0))]
    assert auto_verify_top(ranked)[0] == 3  # itself, (0.5, 3.0), and (-3.0, 1.0) touching at 1.0
    assert auto_verify_top([top, GainForecast(-2.0, (-4.0, 0.0))])[0] == 1  # at least the top pick
    many = [top] + [GainForecast(2.5, (0.0, 4.0))] * 8
    assert auto_verify_top(many) == (5, "the top 5 (9 candidate(s) whose predicted-gain intervals overlap the top "
                                        "pick's, at most 5)")
    assert auto_verify_top([top, GainForecast(2.0, None), None])[0] == 2  # no interval: cannot be ruled out
    # no interval for the top pick (no gains predicted, or none known for it, or too few targets): the top 2
    assert auto_verify_top(None) == (1, "the top 1 (no predicted-gain interval of the top pick to choose by)")
    assert auto_verify_top([None] * 4)[0] == 2 and auto_verify_top([GainForecast(1.0, None)] * 3)[0] == 2
    assert auto_verify_top([None, top, top])[0] == 2


def test_verification_is_cut_to_what_the_budget_leaves():
    assert verifications_within_budget(3, left=100.0, base_seconds=20.0, candidate_seconds=[30, 30, 30]) == 2
    assert verifications_within_budget(3, left=1000.0, base_seconds=20.0, candidate_seconds=[30, 30, 30, 30]) == 3
    assert verifications_within_budget(2, left=10.0, base_seconds=20.0, candidate_seconds=[0, 0]) == 0  # no base
    assert verifications_within_budget(2, left=25.0, base_seconds=20.0, candidate_seconds=[0, 30]) == 1  # cached
    assert verifications_within_budget(2, left=-5.0, base_seconds=0.0, candidate_seconds=[1, 1]) == 0


def entries():
    from upcycle.store import ZooEntry

    base = ZooEntry("b", "minilm", "/zoo/minilm", "bert-6x384", "bert", None, None, "")
    top = ZooEntry("t", "minilm-sst2", "/zoo/minilm-sst2", "bert-6x384", "bert", "sst2", "b", "")
    other = ZooEntry("o", "minilm-mrpc", "/zoo/minilm-mrpc", "bert-6x384", "bert", "mrpc", "b", "")
    return base, top, other


def selection(estimator: str, scores: dict[str, float], forecasts=None, **fields):
    from upcycle.selection import Selection
    from upcycle.selection.estimate import Estimate

    base, top, other = entries()
    result = Estimate(estimator, estimator, scores, seconds=0.1, amortized_seconds=0.0, device="cpu", notes=())
    ranking = tuple(sorted(((top, scores["t"]), (other, scores["o"])), key=lambda pair: -pair[1]))
    return Selection("bert-6x384", "reviews", "accuracy", base, ranking, result, forecasts=forecasts, **fields)


def printed(chosen) -> str:
    from upcycle.cli.common import console
    from upcycle.cli.selection import _print_selection

    with console.capture() as captured:
        _print_selection(chosen)
    return " ".join(captured.get().split())


def test_select_says_the_predicted_gain_and_whether_to_switch():
    sure = selection("prior", {"t": 2.0, "o": 0.5},
                     {"t": GainForecast(2.0, (0.4, 3.6)), "o": GainForecast(0.5, (-1.0, 2.0))})
    text = printed(sure)
    assert "predicted gain of minilm-sst2 over minilm: +2.0 points [+0.4, +3.6] (95% interval for this target, " \
           "prior)" in text, text
    assert "recommendation: switch to minilm-sst2" in text and "start from: minilm-sst2" in text
    answer = sure.to_dict()
    assert answer["predicted_gain"] == 2.0 and answer["predicted_interval"] == [0.4, 3.6]
    assert answer["recommendation"]["action"] == SWITCH and answer["choice"]["candidate"] == "minilm-sst2"
    # nobody is predicted to beat the base: stay, and the choice (what --save keeps) is the base
    worse = selection("prior", {"t": -0.5, "o": -2.0},
                      {"t": GainForecast(-0.5, (-1.5, 0.6)), "o": GainForecast(-2.0, (-3.0, -1.0))})
    text = printed(worse)
    assert "predicted gain of minilm-sst2 over minilm: -0.5 points [-1.5, +0.6]" in text
    assert "recommendation: stay with minilm: no candidate is predicted to beat it" in text
    assert "start from: minilm at /zoo/minilm" in text and worse.to_dict()["recommendation"]["action"] == STAY
    unsure = selection("prior", {"t": 1.0, "o": 0.5}, {"t": GainForecast(1.0, (-0.2, 2.2))},
                       verification="--verify-top auto: the top 2 (2 candidate(s) whose predicted-gain intervals "
                                    "overlap the top pick's)")
    text = printed(unsure)
    assert "recommendation: uncertain: verify" in text and "--verify-top auto: the top 2 (2 candidate(s)" in text
    assert unsure.choice.name == "minilm-sst2"


def test_without_any_known_gain_select_says_so():
    plain = selection("logme", {"t": -310.2, "o": -320.0})
    text = printed(plain)
    assert "predicted gain" not in text and "recommendation:" not in text
    assert "logme predicts a ranking, not a gain over minilm, and no stored bench or imported leaderboard knows " \
           "these candidates: to learn whether switching pays, verify the top candidates (--verify-top auto)" in text
    answer = plain.to_dict()
    assert answer["predicted_gain"] is None and answer["predicted_interval"] is None and answer["gain_model"] is None
    assert answer["recommendation"]["action"] == RANKING_ONLY and answer["choice"]["candidate"] == "minilm-sst2"


def test_a_ranking_estimator_gets_its_gains_from_the_gain_model(capsys):
    from upcycle.selection.estimate import Estimate

    prior = Estimate("prior", "prior", {"t": -1.0, "o": 2.0}, seconds=0.01, amortized_seconds=0.0, device="cpu",
                     notes=("prior: gains of minilm-mrpc (9 targets) from the shipped gains",))
    chosen = selection("logme", {"t": -310.2, "o": -320.0},
                       {"t": GainForecast(-1.0, (-3.0, 1.0)), "o": GainForecast(2.0, (0.5, 3.5))},
                       gain_estimate=prior)
    text = printed(chosen)
    assert "predicted gain of minilm-sst2 over minilm: -1.0 points [-3.0, +1.0] (95% interval for this target, " \
           "prior; the ranking is logme's)" in text, text
    assert "recommendation: uncertain: verify (prior predicts minilm-sst2 no gain, but minilm-mrpc +2.0 points" in text
    assert "warning: prior: gains of minilm-mrpc (9 targets) from the shipped gains" in capsys.readouterr().err
    answer = chosen.to_dict()
    assert answer["gain_model"] == "prior" and answer["gain_model_notes"] == list(prior.notes)
    assert answer["estimator"] == "logme" and answer["choice"]["candidate"] == "minilm-sst2"
    # every known candidate predicted to lose: stay, and the choice is the base
    losing = selection("logme", {"t": -310.2, "o": -320.0},
                       {"t": GainForecast(-1.0, (-3.0, 1.0)), "o": GainForecast(-0.2, (-1.5, 1.1))},
                       gain_estimate=prior)
    assert losing.recommendation.action == STAY and losing.choice.name == "minilm"


def test_the_verify_top_and_examples_options_refuse_bad_values():
    from upcycle.cli.selection import expand_estimators, parse_sizes, parse_verify_top

    assert expand_estimators(["all", "logme+prior", "logme"], ["logme", "prior"]) == ["logme", "prior", "logme+prior"]
    assert expand_estimators(["prior"], ["logme", "prior"]) == ["prior"]
    from upcycle.errors import ConfigError

    assert parse_verify_top("auto") == "auto" and parse_verify_top("AUTO") == "auto" and parse_verify_top("3") == 3
    for bad in ("-1", "two", ""):
        with pytest.raises(ConfigError, match="--verify-top must be auto or a number >= 0"):
            parse_verify_top(bad)
    assert parse_sizes("64, 128,128,256") == [64, 128, 256]
    for bad in ("1", "64,x", ""):
        with pytest.raises(ConfigError, match="--examples must be one or more sample sizes >= 2"):
            parse_sizes(bad)


def test_the_advice_is_judged_by_the_top_picks_measured_gain():
    measured = {"a": 2.0, "b": -1.0, "c": 0.5}
    sure = {"a": GainForecast(3.0, (1.0, 5.0)), "b": GainForecast(-1.0, (-2.0, 0.0)), "c": GainForecast(0.0, None)}
    # the estimator's own gains: its top pick (a) is predicted +3 [1, 5], measured +2: switch, right, covered
    judged = judge_advice({"a": 3.0, "b": -1.0, "c": 0.0}, sure, measured, own=True)
    assert judged == {"advice": SWITCH, "top_gain": 2.0, "predicted_top_gain": 3.0, "top_covered": True,
                      "advice_right": True}
    # a ranking that puts b first, judged with the gain model's forecasts: b is predicted to lose, a to gain
    judged = judge_advice({"a": 0.1, "b": 0.9, "c": float("nan")}, sure, measured, own=False)
    assert judged["advice"] == UNCERTAIN and judged["advice_right"] is None and judged["top_gain"] == -1.0
    # every forecast <= 0: stay; but the top pick by score (c) measured +0.5, so staying was wrong
    gloomy = {name: GainForecast(-1.0, (-3.0, 1.0)) for name in measured}
    judged = judge_advice({"a": 0.0, "b": 0.0, "c": 1.0}, gloomy, measured, own=False)
    assert judged["advice"] == STAY and judged["advice_right"] is False and judged["top_covered"] is True
    # ties go to the first in order; no forecasts at all: ranking only, nothing decided, no coverage
    judged = judge_advice({"b": 1.0, "a": 1.0, "c": 0.0}, None, measured, own=False)
    assert judged["advice"] == RANKING_ONLY and judged["top_gain"] == -1.0 and judged["top_covered"] is None
