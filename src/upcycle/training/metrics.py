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
