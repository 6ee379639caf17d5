"""Write the results database of tests/integration/test_store_compat.py with upcycle 0.1.0 (commit 1f01b02, the
last before the package reshape), then dump it to store_0_1_0.sql:

    git worktree add /tmp/old-upcycle 1f01b02
    PYTHONPATH=/tmp/old-upcycle/src:/tmp/old-upcycle/tests .venv/bin/python tests/data/make_store_0_1_0.py \
        /tmp/compat ../shared/datasets
    python3 -c "import sqlite3; c = sqlite3.connect('/tmp/compat/old.db'); print('\n'.join(c.iterdump()))" \
        > tests/data/store_0_1_0.sql    # then append: PRAGMA user_version = 3;
"""
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
out = Path(sys.argv[1])
shared = Path(sys.argv[2])
import upcycle  # noqa: E402

assert "api" in upcycle._EXPORTS, f"not upcycle 0.1.0: {upcycle.__file__}"
from conftest import save_tiny_bert  # noqa: E402

from upcycle import Store, finetune, plan_bench, run_bench  # noqa: E402

tiny = save_tiny_bert(out / "tiny-bert", seed=0)
overrides = {"max_train": 48, "max_eval": 32, "epochs": 1, "batch_size": 16, "learning_rate": 2e-3}
suite = out / "suite.yaml"
suite.write_text(f"name: compat\ntargets: [{shared / 'cb'}, {shared / 'rte'}]\n")
with Store(out / "old.db") as store:
    result, _ = finetune(str(tiny), str(shared / "poem_sentiment"), seed=3, protocol="quick", overrides=overrides,
                         store=store)
    bench = plan_bench(store, base=str(tiny), suite=str(suite), seeds=1, protocol="quick", overrides=overrides,
                       name="compat")
    list(run_bench(bench, store))
    summary = {"tiny_fingerprint": bench.base.checkpoint.fingerprint, "finetune_key": result.key,
               "bench_keys": sorted(spec.key() for spec in bench.specs()), "overrides": overrides}
print(json.dumps(summary))
