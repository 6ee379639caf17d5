"""Merging checkpoints of one base without training: per-tensor kernels (this issue's first part)."""

from .kernels import (
    dare,
    disjoint_merge,
    generalized_task_arithmetic,
    magnitude_trim,
    require_finite,
    slerp,
    task_arithmetic,
    ties,
    weighted_average,
)

__all__ = [
    "dare", "disjoint_merge", "generalized_task_arithmetic", "magnitude_trim", "require_finite", "slerp", "task_arithmetic", "ties",
    "weighted_average",
]
