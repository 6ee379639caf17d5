"""Merging checkpoints of one base without training.

* :mod:`.kernels`: pure per-tensor math (averaging, task arithmetic, TIES, DARE, SLERP);
* :mod:`.config`: the YAML schema (mergekit's, plus heads / seed / tensor_parameters) and per-tensor plans;
* :mod:`.preflight`: checks from metadata alone and the plan of every output tensor;
* :mod:`.tensor_io`: memory-mapped reading and streamed, sharded safetensors writing;
* :mod:`.engine`: runs a plan (:func:`merge`); :mod:`.card`: provenance and model card.
"""

from .config import MergeConfig, load_config
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
from .preflight import MergePlan, describe, plan_merge

__all__ = [
    "DEFAULT_SHARD_BYTES", "MergeConfig", "MergePlan", "combine", "dare", "describe", "disjoint_merge", "execute",
    "generalized_task_arithmetic", "load_config", "magnitude_trim", "merge", "plan_merge", "require_finite", "slerp",
    "task_arithmetic", "ties", "weighted_average",
]
