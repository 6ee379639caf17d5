"""The second text of a pair reaches the model: a task only solvable from it is learned, and is not without it."""

from __future__ import annotations

import random

from conftest import FILLER, NEGATIVE, POSITIVE, TINY_OVERRIDES, write_rows

from upcycle.specs import FinetuneSpec
from upcycle.training import run_finetune


def pair_rows(count: int, seed: int) -> list[dict]:
    """The first text is filler; only the second holds the cue word that decides the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["pos", "neg"])
        cue = rng.choice(POSITIVE if label == "pos" else NEGATIVE)
        second = rng.sample(FILLER, 4) + [cue]
        rng.shuffle(second)
        rows.append({"first": " ".join(rng.sample(FILLER, 5)), "second": " ".join(second), "label": label})
    return rows


def test_a_label_only_the_second_text_decides_is_learned_from_the_pair(tiny_bert, tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for split, count, seed in (("train", 240, 1), ("dev", 40, 2), ("test", 120, 3)):
        write_rows(folder / f"{split}.csv", pair_rows(count, seed))
    options = dict(text_column="first", label_column="label")
    with_pair = run_finetune(FinetuneSpec.create(tiny_bert, folder, overrides=TINY_OVERRIDES, seed=0,
                                                 text_pair_column="second", **options))
    first_only = run_finetune(FinetuneSpec.create(tiny_bert, folder, overrides=TINY_OVERRIDES, seed=0, **options))
    assert with_pair.n_test == first_only.n_test == 120
    assert with_pair.score > 0.85, with_pair.metrics  # the cue in the second text was read
    assert first_only.score < 0.7, first_only.metrics  # chance without it (the first text says nothing)
