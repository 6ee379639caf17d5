"""upcycle: reuse finetuned language models instead of starting from scratch.

This module is the public API. The names below are imported on first use (PEP 562), so ``upcycle merge`` does
not pay for pandas, scipy or Ray and ``import upcycle`` stays cheap. Where each name lives:

- ``zoo``: finetune (recorded in the store), build_zoo, register, zoo_add
- ``tasks``, ``checkpoints``, ``protocols``, ``specs``: the values every capability passes around
- ``store`` and ``execute``: the SQLite records and the one executor (in-process, process pool, Ray)
- ``ranking``, ``selection``, ``merging``, ``fusion``, ``scoring``: one package per capability
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "checkpoints": ("ArchKey", "Checkpoint", "CheckpointRef", "resolve_checkpoint"),
    "errors": ("CheckpointError", "ConfigError", "MergeError", "StoreError", "TaskError", "UpcycleError"),
    "execute": ("LocalExecutor", "ProcessExecutor", "RayExecutor", "run_specs"),
    "fusion": ("FusionConfig", "run_fusion"),
    "merging": ("MergeConfig", "merge"),
    "protocols": ("PRESETS", "Protocol", "get_protocol"),
    "ranking": ("Bench", "build_leaderboard", "grid_frame", "load_bench", "plan_bench", "run_bench"),
    "report": ("analyze", "build_site", "write_report"),
    "scoring": ("ExpertRoute", "ScoreResult", "build_experts", "flip_train", "route", "score"),
    "selection": ("Selection", "evaluate_selection", "select"),
    "specs": ("FinetuneResult", "FinetuneSpec"),
    "store": ("Store",),
    "tasks": ("Split", "Suite", "Task", "TaskRef", "load_suite", "load_task"),
    "training": ("run_finetune",),
    "zoo": ("build_zoo", "finetune", "register", "zoo_add"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'upcycle' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # static analysers see the lazy imports
    from .checkpoints import ArchKey, Checkpoint, CheckpointRef, resolve_checkpoint
    from .errors import CheckpointError, ConfigError, MergeError, StoreError, TaskError, UpcycleError
    from .execute import LocalExecutor, ProcessExecutor, RayExecutor, run_specs
    from .fusion import FusionConfig, run_fusion
    from .merging import MergeConfig, merge
    from .protocols import PRESETS, Protocol, get_protocol
    from .ranking import Bench, build_leaderboard, grid_frame, load_bench, plan_bench, run_bench
    from .report import analyze, build_site, write_report
    from .scoring import ExpertRoute, ScoreResult, build_experts, flip_train, route, score
    from .selection import Selection, evaluate_selection, select
    from .specs import FinetuneResult, FinetuneSpec
    from .store import Store
    from .tasks import Split, Suite, Task, TaskRef, load_suite, load_task
    from .training import run_finetune
    from .zoo import build_zoo, finetune, register, zoo_add
