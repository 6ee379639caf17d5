"""Merging checkpoints of one base without training.

* :mod:`.methods`: the registry of merge methods (what each computes, which parameters it reads);
* :mod:`.config`: the YAML schema (mergekit's, plus heads / seed / tensor_parameters) and per-tensor plans;
* :mod:`.kernels`: pure per-tensor math (averaging, task arithmetic, TIES, DARE, SLERP); :mod:`.threshold`:
  the exact model-wide magnitude cut of TIES' ``trim_scope: model``;
* :mod:`.plan`: the pre-flight (checks from metadata alone) and the plan of every output tensor;
* :mod:`.engine`: runs a plan (:func:`merge`) over :mod:`upcycle.checkpoints.streaming`; :mod:`.card`:
  provenance and model card.

The registry and the config schema import without torch; the rest is imported on first use (PEP 562), so
``upcycle fuse --help`` and config validation stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import MergeConfig, load_config
from .methods import METHODS, MergeMethod

_LAZY = {
    "engine": ("DEFAULT_SHARD_BYTES", "combine", "execute", "merge"),
    "kernels": ("dare", "disjoint_merge", "generalized_task_arithmetic", "magnitude_trim", "require_finite",
                "slerp", "task_arithmetic", "ties", "weighted_average"),
    "plan": ("MergePlan", "describe", "plan_merge"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}
__all__ = sorted(["METHODS", "MergeConfig", "MergeMethod", "load_config", *_WHERE])


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'upcycle.merging' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # static analysers see the lazy imports
    from .engine import DEFAULT_SHARD_BYTES, combine, execute, merge
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
    from .plan import MergePlan, describe, plan_merge
