"""Batching: every example once per epoch, length grouping cuts padding, padding and masks are right."""

from __future__ import annotations

import numpy as np

from upcycle.training.batching import Encoded, collate, eval_batches, train_batches


def padded_tokens(batches, lengths):
    return sum(len(b) * lengths[b].max() for b in batches)


def test_train_batches_cover_every_example_once_and_grouping_cuts_padding():
    rng_lengths = np.random.default_rng(0).integers(5, 120, size=3000)
    for grouped in (False, True):
        batches = train_batches(rng_lengths, 32, np.random.default_rng(1), grouped)
        assert sorted(np.concatenate(batches).tolist()) == list(range(3000))
        assert max(len(b) for b in batches) == 32
    random_padding = padded_tokens(train_batches(rng_lengths, 32, np.random.default_rng(1), False), rng_lengths)
    grouped_padding = padded_tokens(train_batches(rng_lengths, 32, np.random.default_rng(1), True), rng_lengths)
    assert grouped_padding < 0.7 * random_padding
    assert grouped_padding < 1.05 * rng_lengths.sum()


def test_grouped_batches_are_deterministic_and_seed_dependent():
    lengths = np.arange(500) % 37
    first = train_batches(lengths, 16, np.random.default_rng(3), True)
    again = train_batches(lengths, 16, np.random.default_rng(3), True)
    other = train_batches(lengths, 16, np.random.default_rng(4), True)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_eval_batches_are_sorted_longest_first():
    lengths = np.array([3, 9, 1, 7, 5])
    assert [b.tolist() for b in eval_batches(lengths, 2)] == [[1, 3], [4, 0], [2]]


def test_collate_pads_to_the_longest_in_batch():
    encoded = Encoded(
        features={"input_ids": [np.array([101, 7, 102]), np.array([101, 102]), np.array([101, 5, 6, 7, 102])],
                  "token_type_ids": [np.zeros(3, int), np.zeros(2, int), np.array([0, 0, 1, 1, 1])]},
        labels=np.array([1, 0, 1]), lengths=np.array([3, 2, 5]),
    )
    batch = collate(encoded, np.array([0, 1]), pad_token_id=0)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].shape == (2, 3) and batch["labels"].tolist() == [1, 0]
    assert collate(encoded, np.array([2, 1]), 0)["token_type_ids"].tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]]
