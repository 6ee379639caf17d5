"""Every public name of upcycle 0.1.0 still imports from the package root, after the reshape."""

from __future__ import annotations

import subprocess
import sys

import upcycle

NAMES_0_1_0 = ("ArchKey Bench Checkpoint CheckpointError ConfigError FinetuneResult FinetuneSpec LocalExecutor "
               "MergeConfig MergeError PRESETS Protocol RayExecutor Selection Split Store StoreError Suite Task "
               "TaskError UpcycleError build_leaderboard build_zoo evaluate_selection finetune get_protocol grid_frame "
               "load_bench load_suite load_task merge plan_bench register resolve_checkpoint run_bench run_finetune "
               "run_specs select zoo_add").split()


def test_every_0_1_0_public_name_still_imports():
    missing = [name for name in NAMES_0_1_0 if not hasattr(upcycle, name)]
    assert missing == [] and set(NAMES_0_1_0) <= set(upcycle.__all__)
    assert callable(upcycle.finetune) and upcycle.finetune.__module__ == "upcycle.zoo"  # the function, not a module


def test_importing_upcycle_loads_no_torch_pandas_or_ray():
    code = ("import sys, upcycle, upcycle.cli; heavy = {'torch', 'pandas', 'ray', 'transformers'} & set(sys.modules);"
            "print(sorted(heavy))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
