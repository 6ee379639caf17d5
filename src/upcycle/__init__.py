"""upcycle: reuse finetuned language models instead of starting from scratch."""

__version__ = "0.1.0"

from .api import finetune, register, zoo_add  # noqa: E402
from .checkpoints import ArchKey, Checkpoint, resolve_checkpoint  # noqa: E402
from .errors import CheckpointError, ConfigError, StoreError, TaskError, UpcycleError  # noqa: E402
from .execute import LocalExecutor, run_specs  # noqa: E402
from .finetune import FinetuneResult, FinetuneSpec, run_finetune  # noqa: E402
from .protocols import PRESETS, Protocol, get_protocol  # noqa: E402
from .store import Store  # noqa: E402
from .tasks import Split, Task, load_task  # noqa: E402

__all__ = [
    "ArchKey", "Checkpoint", "CheckpointError", "ConfigError", "FinetuneResult", "FinetuneSpec", "LocalExecutor",
    "PRESETS", "Protocol", "Split", "StoreError", "Store", "Task", "TaskError", "UpcycleError", "finetune",
    "get_protocol", "load_task", "register", "resolve_checkpoint", "run_finetune", "run_specs", "zoo_add",
]
