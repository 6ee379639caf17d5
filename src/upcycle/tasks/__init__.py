"""Tasks: labelled text datasets (values), their loaders, and target suites with the one data-overlap rule."""

from .loading import TaskRef, load_task, read_jsonl
from .suites import BUILTIN, OVERLAP_GROUPS, RECYCLING, Suite, load_suite, overlapping
from .task import SPLITS, Split, Task, TaskKind, TaskSource, sample_indices

__all__ = [
    "BUILTIN", "OVERLAP_GROUPS", "RECYCLING", "SPLITS", "Split", "Suite", "Task", "TaskKind", "TaskRef", "TaskSource",
    "load_suite", "load_task", "overlapping", "read_jsonl", "sample_indices",
]
