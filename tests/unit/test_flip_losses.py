"""Flipped Learning's pure parts against hand computations: token log-probs, the likelihood and unlikelihood losses
(and their stability at p -> 1), the training rows, the data order and the wrong-option sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from upcycle.scoring.flip_training import (
    MIN_ONE_MINUS_P,
    example_requests,
    length_groups,
    likelihood_loss,
    step_examples,
    token_logprobs,
    unlikelihood_loss,
    wrong_options,
)
from upcycle.scoring.methods import METHODS, flipped_request
from upcycle.tasks.prompts import Prompt


def test_token_logprobs_match_a_hand_softmax_and_are_zero_on_padding():
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0], [1.0, 1.0, 1.0]],
                           [[2.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])  # (2 rows, 2 positions, vocab 3)
    targets = torch.tensor([[1, 2], [0, 7]])  # 7 is no token: it sits on padding and must be ignored
    mask = torch.tensor([[1, 1], [1, 0]])
    expected = torch.tensor([[math.log(3 / 5), math.log(1 / 3)],
                             [math.log(math.e**2 / (math.e**2 + 2)), 0.0]])
    torch.testing.assert_close(token_logprobs(logits, targets, mask), expected)
    flat = token_logprobs(logits[mask.bool()], targets[mask.bool()], torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(flat, expected[mask.bool()])  # (N, V) logits, as logits_to_keep returns them


def test_likelihood_loss_is_the_mean_negative_log_probability_over_real_tokens():
    logprobs = torch.log(torch.tensor([[0.5, 0.9, 0.01], [0.9, 0.2, 0.3]]))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = (-math.log(0.5) - math.log(0.9) - math.log(0.9)) / 3
    assert likelihood_loss(logprobs, mask).item() == pytest.approx(expected, rel=1e-6)
    assert likelihood_loss(logprobs, torch.zeros_like(mask)).item() == 0.0


def test_unlikelihood_loss_is_the_mean_of_minus_log_one_minus_p():
    logprobs = torch.log(torch.tensor([[0.5, 0.9, 0.01], [0.9, 0.2, 0.3]]))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = (-math.log(0.5) - math.log(0.1) - math.log(0.1)) / 3
    assert unlikelihood_loss(logprobs, mask).item() == pytest.approx(expected, rel=1e-5)


def test_unlikelihood_is_accurate_for_small_p_and_finite_with_finite_gradients_at_p_one():
    tiny = torch.tensor([-30.0], dtype=torch.float64)  # p = e^-30: -log(1 - p) = p to 1e-26
    assert unlikelihood_loss(tiny, torch.ones(1)).item() == pytest.approx(math.exp(-30), rel=1e-9)
    certain = torch.tensor([0.0, -1e-12, -1e-9, -math.inf], requires_grad=True)  # p = 1, ~1, ~1, and padding
    loss = unlikelihood_loss(certain, torch.tensor([1, 1, 1, 0]))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(-math.log(MIN_ONE_MINUS_P), rel=1e-3)
    assert torch.isfinite(certain.grad).all()
    likely = torch.tensor([math.log(0.999)], requires_grad=True)  # below the cap: the gradient pushes p down
    unlikelihood_loss(likely, torch.ones(1)).backward()
    assert likely.grad.item() == pytest.approx(0.999 / 0.001, rel=1e-3)


def test_padding_with_minus_infinity_gives_no_nan_in_either_loss():
    logprobs = torch.tensor([math.log(0.5), -math.inf], requires_grad=True)
    mask = torch.tensor([1, 0])
    (likelihood_loss(logprobs, mask) + unlikelihood_loss(logprobs, mask)).backward()
    assert torch.isfinite(logprobs.grad).all()


PROMPT = Prompt(instruction="Which topic?", input="stocks fell", options=("world", "sports", "business", "tech"),
                label=2)


def test_flipped_rows_are_the_scorers_requests_gold_first():
    rows = example_requests(PROMPT, "flipped", wrong=[0, 3])
    assert rows == [(*flipped_request("stocks fell", "business", "Which topic?"), True),
                    (*flipped_request("stocks fell", "world", "Which topic?"), False),
                    (*flipped_request("stocks fell", "tech", "Which topic?"), False)]
    assert [(c, y) for c, y, _ in rows] == [METHODS.get("flipped").requests(PROMPT)[i] for i in (2, 0, 3)]
    assert example_requests(PROMPT, "direct") == [(*METHODS.get("direct").requests(PROMPT)[2], True)]


def test_each_pass_over_the_data_is_a_seeded_permutation():
    stream = [i for step in range(6) for i in step_examples(10, step, 5, seed=3)]  # 3 passes over 10 examples
    passes = [stream[k:k + 10] for k in range(0, 30, 10)]
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert passes[0] != passes[1]  # reshuffled every pass
    assert step_examples(10, 4, 5, seed=3) == stream[20:25]  # a pure function of the step: nothing to resume
    assert step_examples(10, 0, 5, seed=4) != stream[:5]


def test_wrong_options_are_capped_sampled_per_step_and_cover_every_class():
    fifty = Prompt("I", "x", tuple(f"c{i}" for i in range(50)), label=7)
    draws = [wrong_options(fifty, 4, seed=0, step=step, index=3) for step in range(200)]
    assert all(len(d) == 4 and 7 not in d and d == sorted(set(d)) for d in draws)
    assert draws[5] == wrong_options(fifty, 4, seed=0, step=5, index=3)  # deterministic
    assert len({tuple(d) for d in draws}) > 150 and set(np.concatenate(draws)) == set(range(50)) - {7}
    assert wrong_options(PROMPT, 4, seed=0, step=0, index=0) == [0, 1, 3]  # fewer than max_wrong: all of them


def test_length_groups_put_rows_of_like_length_together_within_the_token_budget():
    lengths = [30, 5, 200, 6, 28, 7]
    groups = length_groups(lengths, 64)
    assert sorted(i for g in groups for i in g) == list(range(6))  # every row once
    assert groups == [[1, 3, 5], [4, 0], [2]]  # shortest first; 200 > 64 runs alone
    assert all(len(g) * max(lengths[i] for i in g) <= 64 for g in groups if len(g) > 1)
    assert length_groups(lengths, None) == [list(range(6))]  # one pass, in order
    assert length_groups([], 64) == [] and length_groups([], None) == []
    assert length_groups([3, 3, 3], 1) == [[0], [1], [2]]
