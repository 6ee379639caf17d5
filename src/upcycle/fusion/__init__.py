"""ColD Fusion: contributors finetune a shared base on private data; the repository fuses their weights."""

import warnings

from ..execute import ProcessExecutor
from ..training import train_multitask
from .contributor import Contribution, ContributionRequest, Contributor, contribute, run_contributions
from .evaluation import bench_evaluator, fusion_bench
from .loop import FusionConfig, FusionState, IterationRecord, fuse, run_fusion

__all__ = [
    "Contribution", "ContributionRequest", "Contributor", "FusionConfig", "FusionState", "IterationRecord",
    "bench_evaluator", "contribute", "fuse", "fusion_bench", "run_contributions", "run_fusion", "train_multitask",
]


def __getattr__(name: str):
    """``LocalWorkers`` (0.1.0, shown in the README) is now :class:`upcycle.execute.ProcessExecutor`."""
    if name == "LocalWorkers":
        warnings.warn("upcycle.fusion.LocalWorkers is deprecated; use upcycle.execute.ProcessExecutor.",
                      DeprecationWarning, stacklevel=2)
        return ProcessExecutor
    raise AttributeError(f"module 'upcycle.fusion' has no attribute '{name}'")
