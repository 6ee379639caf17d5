"""What makes a test score less certain than it looks: small or carved test splits, one-class predictions."""

from __future__ import annotations

import numpy as np

from upcycle.training.metrics import caveats


def test_a_large_balanced_test_split_has_no_caveat():
    predictions = np.arange(600) % 3
    assert caveats(predictions, kind="classification", label_names=("a", "b", "c")) == []


def test_a_small_or_carved_test_split_is_named_with_what_one_example_weighs():
    notes = caveats(np.arange(60) % 2, kind="classification", label_names=("neg", "pos"),
                    split_notes=("test split carved from train (60 examples, seed 0)",
                                 "validation split carved from train (54 examples, seed 0)"))
    assert notes[0] == "test split carved from train (60 examples, seed 0)"
    assert "60 examples (one example is 1.7 points of accuracy)" in notes[1] and len(notes) == 2
    assert "correlation" in caveats(np.linspace(0, 1, 50), kind="regression", label_names=None)[0]


def test_predicting_one_class_for_most_of_the_test_set_warns():
    predictions = np.array([1] * 460 + [0] * 40)  # 92% one class
    (note,) = caveats(predictions, kind="classification", label_names=("neg", "pos"))
    assert "one class (pos) for 92% of the test set" in note
    assert caveats(np.array([1] * 440 + [0] * 60), kind="classification", label_names=("neg", "pos")) == []
