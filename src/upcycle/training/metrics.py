"""Evaluation metrics as pure functions of predictions and references."""

from __future__ import annotations

import numpy as np


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 over all ``num_labels`` classes present in either array.

    Args:
        predictions: (n,) predicted class indices.
        labels: (n,) true class indices.
    """
    from sklearn.metrics import f1_score  # lazy: scikit-learn is slow to import

    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    present = np.union1d(np.unique(labels), np.unique(predictions))
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlation (0.0 when predictions are constant) and mean squared error.

    Args:
        predictions: (n,) predicted values.
        targets: (n,) true values.
    """
    from scipy.stats import pearsonr, spearmanr  # lazy: scipy is slow to import

    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    constant = np.ptp(predictions) == 0 or np.ptp(targets) == 0
    return {
        "spearman": 0.0 if constant else float(spearmanr(predictions, targets).statistic),
        "pearson": 0.0 if constant else float(pearsonr(predictions, targets).statistic),
        "mse": float(np.mean((predictions - targets) ** 2)),
    }


SMALL_TEST_SPLIT = 200  # fewer test examples than this: a few examples move the score by points
ONE_CLASS_SHARE = 0.9  # predicting one class for more of the test set than this looks like majority-class behaviour


def caveats(predictions: np.ndarray, *, kind: str, label_names: tuple[str, ...] | None,
            split_notes: tuple[str, ...] = (), scored: str = "the test split") -> list[str]:
    """What makes a test score less certain than it looks, in words a user can act on.

    Args:
        predictions: (n,) test predictions (class indices for classification).
        kind: ``classification`` or ``regression``.
        label_names: the class names (classification).
        split_notes: how the task's missing splits were made (``Task.notes``); those about the test split count.
        scored: what the predictions cover, as the notes name it (``the test sample`` for a subsample).
    """
    notes = [note for note in split_notes if note.startswith("test")]
    count = len(predictions)
    if 0 < count < SMALL_TEST_SPLIT:
        weight = f"one example is {100 / count:.1f} points of accuracy" if kind == "classification" else (
            "a correlation on so few is loose")
        notes.append(f"{scored} has {count} examples ({weight}): differences of a few points can be noise; "
                     "compare several seeds")
    if kind == "classification" and count:
        shares = np.bincount(np.asarray(predictions, dtype=np.int64)) / count
        top = int(shares.argmax())
        if shares[top] > ONE_CLASS_SHARE:
            name = label_names[top] if label_names is not None and top < len(label_names) else str(top)
            notes.append(f"it predicts one class ({name}) for {shares[top]:.0%} of the test set: close to a "
                         "majority-class guess; it may not have learned the task")
    return notes
