"""ColD Fusion: contributors finetune a shared base on private data; the repository fuses their weights."""

from .contributor import Contribution, ContributionRequest, Contributor, contribute
from .evaluation import bench_evaluator, fusion_bench
from .loop import FusionConfig, FusionState, IterationRecord, fuse, run_fusion
from .multitask import train_multitask
from .workers import LocalWorkers, RayWorkers, make_workers

__all__ = [
    "Contribution", "ContributionRequest", "Contributor", "FusionConfig", "FusionState", "IterationRecord",
    "LocalWorkers", "RayWorkers", "bench_evaluator", "contribute", "fuse", "fusion_bench", "make_workers",
    "run_fusion", "train_multitask",
]
