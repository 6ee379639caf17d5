"""upcycle: reuse finetuned language models instead of starting from scratch."""

__version__ = "0.1.0"

from .api import finetune, register, zoo_add
from .checkpoints import ArchKey, Checkpoint, resolve_checkpoint
from .errors import CheckpointError, ConfigError, StoreError, TaskError, UpcycleError
from .execute import LocalExecutor, run_specs
from .finetune import FinetuneResult, FinetuneSpec, run_finetune
from .protocols import PRESETS, Protocol, get_protocol
from .store import Store
from .tasks import Split, Task, load_task

__all__ = [
    "PRESETS",
    "ArchKey",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "FinetuneResult",
    "FinetuneSpec",
    "LocalExecutor",
    "Protocol",
    "Split",
    "Store",
    "StoreError",
    "Task",
    "TaskError",
    "UpcycleError",
    "finetune",
    "get_protocol",
    "load_task",
    "register",
    "resolve_checkpoint",
    "run_finetune",
    "run_specs",
    "zoo_add",
]
