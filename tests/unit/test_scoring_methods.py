"""Scoring methods over hand-set log-probabilities: requests, normalisations, calibrations, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from upcycle.errors import ConfigError
from upcycle.scoring.methods import (
    METHODS,
    accuracy_and_macro_f1,
    option_scores,
    resolve_methods,
)
from upcycle.tasks.prompts import Prompt

PROMPT = Prompt(instruction="Is it good or bad?", input="a fine film", options=("bad", "good"), label=1)


class FakeLM:
    """Returns the per-token log-probs set for each (context, continuation); records what it was asked."""

    def __init__(self, table: dict[tuple[str, str], list[float]]):
        self.table = table
        self.calls: list[tuple[list[str], list[str], list[int]]] = []

    def __call__(self, contexts, continuations, groups):
        self.calls.append((list(contexts), list(continuations), list(groups)))
        return [np.asarray(self.table[(c, y)], dtype=float) for c, y in zip(contexts, continuations)]


def test_requests_read_the_probability_each_method_names():
    assert METHODS.get("direct").requests(PROMPT) == [
        ("Is it good or bad?\na fine film\nAnswer:", " bad"), ("Is it good or bad?\na fine film\nAnswer:", " good")]
    assert METHODS.get("channel").requests(PROMPT) == [
        ("Answer: bad\n", "Is it good or bad?\na fine film"), ("Answer: good\n", "Is it good or bad?\na fine film")]
    assert METHODS.get("channel-input").requests(PROMPT)[1] == ("Answer: good\n", "a fine film")
    assert METHODS.get("flipped").requests(PROMPT) == [
        ("a fine film\nAnswer: bad\nInstruction:", " Is it good or bad?"),
        ("a fine film\nAnswer: good\nInstruction:", " Is it good or bad?")]
    assert [m.name for m in resolve_methods("all")] == ["direct", "channel", "flipped"]
    with pytest.raises(ConfigError, match="Unknown scoring method 'flopped'; known: channel, channel-input"):
        resolve_methods("direct,flopped")


def test_normalisations_change_the_choice_as_computed_by_hand():
    context = "Is it good or bad?\na fine film\nAnswer:"
    lm = FakeLM({(context, " bad"): [-1.5], (context, " good"): [-1.0, -1.0]})
    direct = METHODS.get("direct")
    np.testing.assert_allclose(option_scores([PROMPT], direct, lm, normalize="sum"), [[-1.5, -2.0]])
    np.testing.assert_allclose(option_scores([PROMPT], direct, lm, normalize="token"), [[-1.5, -1.0]])
    np.testing.assert_allclose(option_scores([PROMPT], direct, lm, normalize="char"), [[-1.5 / 4, -2.0 / 5]])
    assert lm.calls[0][2] == [0, 0]  # one prompt's options form one group (their shared prefix runs once)
    emoji = Prompt("Which emoji?", "sunny day", ("☀", "x"), 0)
    lm = FakeLM({("Which emoji?\nsunny day\nAnswer:", " ☀"): [-3.0],
                 ("Which emoji?\nsunny day\nAnswer:", " x"): [-2.0]})
    np.testing.assert_allclose(option_scores([emoji], direct, lm, normalize="byte"), [[-3.0 / 4, -2.0 / 2]])


def test_calibration_subtracts_the_content_free_scores_computed_once():
    lm = FakeLM({
        ("a fine film\nAnswer: bad\nInstruction:", " Is it good or bad?"): [-2.0, -1.0],
        ("a fine film\nAnswer: good\nInstruction:", " Is it good or bad?"): [-2.5, -1.0],
        ("a poor film\nAnswer: bad\nInstruction:", " Is it good or bad?"): [-2.2, -1.0],
        ("a poor film\nAnswer: good\nInstruction:", " Is it good or bad?"): [-2.0, -1.0],
        ("N/A\nAnswer: bad\nInstruction:", " Is it good or bad?"): [-1.0, -1.0],
        ("N/A\nAnswer: good\nInstruction:", " Is it good or bad?"): [-3.0, -1.0],
        ("\nAnswer: bad\nInstruction:", " Is it good or bad?"): [-1.0],
        ("\nAnswer: good\nInstruction:", " Is it good or bad?"): [-1.0],
    })
    prompts = [PROMPT, Prompt(PROMPT.instruction, "a poor film", PROMPT.options, 0)]
    flipped = METHODS.get("flipped")
    raw = option_scores(prompts, flipped, lm)
    np.testing.assert_allclose(raw, [[-3.0, -3.5], [-3.2, -3.0]])
    assert raw.argmax(1).tolist() == [0, 1]  # both wrong before calibration
    calibrated = option_scores(prompts, flipped, lm, calibrate="content-free")
    np.testing.assert_allclose(calibrated, [[-1.0, 0.5], [-1.2, 1.0]])  # raw - [-2, -4]
    assert calibrated.argmax(1).tolist() == [1, 1]
    np.testing.assert_allclose(option_scores(prompts, flipped, lm, calibrate="pmi"), raw + 1.0)
    assert len(lm.calls[-1][0]) == 2  # the calibration input costs one extra prompt for the whole task


def test_bad_options_are_refused_before_any_scoring():
    lm = FakeLM({})
    with pytest.raises(ConfigError, match="pmi removes the input, which channel scores"):
        option_scores([PROMPT], METHODS.get("channel"), lm, calibrate="pmi")
    with pytest.raises(ConfigError, match="Unknown normalization 'mean'"):
        option_scores([PROMPT], METHODS.get("direct"), lm, normalize="mean")
    with pytest.raises(ConfigError, match="Unknown calibration"):
        option_scores([PROMPT], METHODS.get("direct"), lm, calibrate="zhao")
    with pytest.raises(ConfigError, match="same number of options"):
        option_scores([PROMPT, Prompt("I", "x", ("a", "b", "c"), 0)], METHODS.get("direct"), lm)
    assert lm.calls == []


def test_accuracy_and_macro_f1_by_hand():
    metrics = accuracy_and_macro_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 1])
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    # F1: class 0 = 2*1*0.5/1.5 = 2/3; class 1 = 2*(2/4)*1/(1.5) = 2/3; class 2 = 0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
