"""LogME (You et al., 2021): the maximised marginal evidence of a Bayesian linear model on frozen features.

For each label column y (one-hot columns for classes, the standardised target for regression) the model is
y = F w + noise with w ~ N(0, 1/alpha I) and noise ~ N(0, 1/beta); alpha and beta are found by MacKay's
fixed-point iteration in the SVD basis of F, and the evidence per example is averaged over columns.

The fix for fewer examples than feature dimensions (n < d): the thin SVD has only r = rank(F) <= n
singular values, but log|alpha I + beta F^T F| has d terms; the d - r directions without data contribute
log(alpha) each. Implementations that sum over the r singular values only drop (d - r) log(alpha) / 2 and
mis-rank checkpoints on small targets. :func:`log_evidence` keeps it.
"""

from __future__ import annotations

import numpy as np

from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator

MIN_EXAMPLES = 10


def log_evidence(sigma: np.ndarray, x: np.ndarray, outside: float, n: int, d: int, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / n in the SVD basis.

    sigma: (r,) squared non-zero singular values of F (n, d); x: (r,) = U^T y; outside: |y|^2 - |x|^2, the
    part of y outside F's column space.
    """
    t = alpha / beta
    m2 = float((sigma * x**2 / (sigma + t) ** 2).sum())  # |m|^2, m the posterior mean of w
    residual = float((x**2 / (1 + sigma / t) ** 2).sum() + outside)  # |F m - y|^2
    log_det = float(np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * np.log(alpha))
    evidence = (d * np.log(alpha) + n * np.log(beta) - beta * residual - alpha * m2 - log_det - n * np.log(2 * np.pi))
    return float(evidence / (2 * n))


def max_evidence(sigma: np.ndarray, x: np.ndarray, outside: float, n: int, d: int,
                 iterations: int = 100, tolerance: float = 1e-6) -> float:
    """Evidence per example at the fixed point of MacKay's updates for (alpha, beta)."""
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())  # effective number of parameters
        m2 = float((sigma * x**2 / (sigma + t) ** 2).sum())
        residual = float((x**2 / (1 + sigma / t) ** 2).sum() + outside)
        alpha = gamma / max(m2, 1e-12)
        beta = max(n - gamma, 1e-12) / max(residual, 1e-12)
        if abs(alpha / beta - t) <= tolerance * t:
            break
    return log_evidence(sigma, x, outside, n, d, alpha, beta)


def logme(features: np.ndarray, labels: np.ndarray, *, regression: bool) -> float:
    """LogME of features (n, d) for labels (n,): class indices, or real targets when ``regression``."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)  # u (n, min(n, d)), s (min(n, d),)
    keep = s > s.max() * 1e-10 if s.size and s.max() > 0 else np.zeros_like(s, dtype=bool)
    u, sigma = u[:, keep], s[keep] ** 2
    if regression:
        y = np.asarray(labels, dtype=np.float64)
        columns = [(y - y.mean()) / (y.std() or 1.0)]
    else:
        classes = np.unique(labels)
        columns = [(np.asarray(labels) == c).astype(np.float64) for c in classes]
    evidences = []
    for y in columns:
        x = u.T @ y  # (r,)
        evidences.append(max_evidence(sigma, x, float(y @ y - x @ x), n, d))
    return float(np.mean(evidences))


@register_estimator
class LogME(Estimator):
    name = "logme"
    summary = "LogME evidence of a Bayesian linear model on the candidate's frozen features of the target"
    fallback = "semb"

    def scores(self, context: SelectionContext) -> dict[str, float]:
        labels = context.target_labels
        if len(labels) < MIN_EXAMPLES:
            raise EstimatorUnavailable(f"{len(labels)} examples; LogME needs at least {MIN_EXAMPLES}")
        return context.score_features(self.name, lambda features: logme(features, labels,
                                                                        regression=context.regression))
