"""Tasks: labelled text datasets (values), their loaders, target suites with the one data-overlap rule, prompts."""

from .loading import TaskRef, load_task, read_jsonl
from .prompts import (
    Prompt,
    Template,
    builtin_template,
    builtin_template_names,
    default_template,
    load_template,
    template_for,
    validate_template,
)
from .suites import BUILTIN, OVERLAP_GROUPS, RECYCLING, Suite, load_suite, overlapping
from .task import SPLITS, Split, Task, TaskKind, TaskSource, sample_indices

__all__ = [
    "BUILTIN", "OVERLAP_GROUPS", "Prompt", "RECYCLING", "SPLITS", "Split", "Suite", "Task", "TaskKind", "TaskRef",
    "TaskSource", "Template", "builtin_template", "builtin_template_names", "default_template", "load_suite",
    "load_task", "load_template", "overlapping", "read_jsonl", "sample_indices", "template_for", "validate_template",
]
