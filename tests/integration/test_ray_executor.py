"""The Ray executor on a real local cluster (a head and a worker node on loopback), with kill -9 of the driver
and of a worker midway.

Ray runs inside private network and PID namespaces: the network one keeps it on loopback (see
../shared/RAY.md); the PID one keeps the scenario's `ray stop` and `pgrep` away from any other Ray on the
machine (`ray stop` otherwise kills every raylet it can see).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_bert

from upcycle.protocols import parse_overrides
from upcycle.ranking import load_bench
from upcycle.store import Store
from upcycle.zoo import build_zoo

SCENARIO = Path(__file__).with_name("ray_scenario.py")
ISOLATE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
FAST = ["max_train=200", "max_eval=64", "epochs=2", "batch_size=16", "learning_rate=1e-3", "warmup_ratio=0"]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None or os.geteuid() != 0:
        return False
    return subprocess.run([*ISOLATE, "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare to keep Ray on loopback and to itself")
def test_ray_grid_survives_kill_of_driver_and_worker(tmp_path, shared_data):
    base = save_tiny_bert(tmp_path / "tiny-base")
    db = tmp_path / "ray.db"
    with Store(db) as store:
        overrides = parse_overrides(FAST)
        list(build_zoo(store, base=str(base), sources=[str(shared_data / "sst2"), str(shared_data / "cb")],
                       out=tmp_path / "experts", overrides=overrides))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "ray", "targets": [str(shared_data / "poem_sentiment"),
                                                                  str(shared_data / "rotten_tomatoes")]}))
    extra = ["--seeds", "2", *(arg for item in FAST for arg in ("--set", item))]
    # Ray's files (and the address file `ray start` writes) in a private, short directory, not the shared /tmp/ray
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               TOKENIZERS_PARALLELISM="false", COLUMNS="200", RAY_TMPDIR=str(ray_tmp),
               PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    inner = f"ip link set lo up && exec {sys.executable} {SCENARIO} {db} {suite} {base} 6391 -- {' '.join(extra)}"
    try:
        completed = subprocess.run([*ISOLATE, "sh", "-c", inner], capture_output=True, text=True, env=env,
                                   timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    assert report["alive_nodes"] == 2
    assert report["returncode"] == 0, report["stderr"]
    assert report["killed_worker"], "no worker was caught running a finetune"
    with Store(db) as store:
        bench = load_bench(store, "ray-tiny-base")  # default name: SUITE-BASE
        expected = {spec.key() for spec in bench.specs()}
    # 2 targets x 2 seeds x (base + 2 experts), minus the sst2 expert on rotten_tomatoes (overlap)
    assert len(expected) == 2 * 2 * 3 - 2
    before = set(report["after_driver_kill"]) & expected
    assert before, "the driver was killed before storing anything"
    final = set(report["final"])
    assert before <= final and expected <= final  # nothing finished was lost, and the grid is complete
    assert len(final - expected) == 2  # the two experts' own finetunes from the zoo build, nothing else
    match = re.search(r"(\d+)\s+stored,\s+(\d+)\s+to\s+run", report["stdout"])
    assert match is not None and int(match[2]) == len(expected) - len(before)  # the rerun redid nothing stored
    assert "vanilla base" in report["stdout"]


def test_a_lost_raylet_becomes_one_line_that_says_how_to_resume():
    import ray.exceptions

    from upcycle.execute import _describe_failure

    message = _describe_failure("expert on cb (seed 1)", ray.exceptions.LocalRayletDiedError())
    assert message.startswith("Ray lost expert on cb (seed 1): LocalRayletDiedError")
    assert "rerun the same command to resume" in message and "\n" not in message
