"""upcycle: reuse finetuned language models instead of starting from scratch.

The public names below are imported on first use (PEP 562), so ``upcycle merge`` does not pay for pandas,
scipy or Ray and ``import upcycle`` stays cheap (the api functions excepted, see below).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "api": ("build_zoo", "finetune", "register", "zoo_add"),
    "bench": ("Bench", "grid_frame", "load_bench", "plan_bench", "run_bench"),
    "checkpoints": ("ArchKey", "Checkpoint", "resolve_checkpoint"),
    "errors": ("CheckpointError", "ConfigError", "MergeError", "StoreError", "TaskError", "UpcycleError"),
    "execute": ("LocalExecutor", "RayExecutor", "run_specs"),
    "finetune": ("FinetuneResult", "FinetuneSpec", "run_finetune"),
    "leaderboard": ("build_leaderboard",),
    "merging": ("MergeConfig", "merge"),
    "protocols": ("PRESETS", "Protocol", "get_protocol"),
    "selection": ("Selection", "select"),
    "selection_eval": ("evaluate_selection",),
    "store": ("Store",),
    "suites": ("Suite", "load_suite"),
    "tasks": ("Split", "Task", "load_task"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


# ``finetune`` names both a submodule and the api function; importing the submodule binds the module to the
# package attribute, so the function is bound eagerly, after it (api is light: no torch or transformers)
from .api import build_zoo, finetune, register, zoo_add  # noqa: E402


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'upcycle' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # static analysers see the eager imports
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
