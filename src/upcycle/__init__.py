"""upcycle: reuse finetuned language models instead of starting from scratch."""

__version__ = "0.1.0"

from .api import build_zoo, finetune, register, zoo_add
from .bench import Bench, grid_frame, load_bench, plan_bench, run_bench
from .checkpoints import ArchKey, Checkpoint, resolve_checkpoint
from .errors import (
    CheckpointError,
    ConfigError,
    MergeError,
    StoreError,
    TaskError,
    UpcycleError,
)
from .execute import LocalExecutor, RayExecutor, run_specs
from .finetune import FinetuneResult, FinetuneSpec, run_finetune
from .leaderboard import build_leaderboard
from .merging import MergeConfig, merge
from .protocols import PRESETS, Protocol, get_protocol
from .selection import Selection, select
from .selection_eval import evaluate_selection
from .store import Store
from .suites import Suite, load_suite
from .tasks import Split, Task, load_task

__all__ = [
    "PRESETS", "ArchKey", "Bench", "Checkpoint", "CheckpointError", "ConfigError", "FinetuneResult", "FinetuneSpec",
    "LocalExecutor", "MergeConfig", "MergeError", "Protocol", "RayExecutor", "Selection", "Split", "Store", "StoreError", "Suite", "Task",
    "TaskError", "UpcycleError", "build_leaderboard", "build_zoo", "evaluate_selection", "finetune", "get_protocol",
    "grid_frame", "load_bench", "load_suite", "load_task", "merge", "plan_bench", "register", "resolve_checkpoint",
    "run_bench", "run_finetune", "run_specs", "select", "zoo_add",
]
