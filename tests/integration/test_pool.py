"""The pool executor on a tiny BERT and real shared tasks: the same numbers as one job at a time in this process,
and a worker killed with kill -9 stops the run in one line, keeps what finished, and the rerun resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import save_tiny_bert

from upcycle.execute import LocalExecutor, make_executor, run_specs
from upcycle.specs import FinetuneSpec
from upcycle.store import Store
from upcycle.training.devices import DEVICE_VARIABLE, available_cores

FAST = {"max_train": 120, "max_eval": 64, "epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}


def test_a_pool_gives_the_numbers_one_job_at_a_time_gives(tiny_bert, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    specs = [FinetuneSpec.create(str(tiny_bert), str(shared_data / target), seed=seed, overrides=FAST)
             for target in ("stsb", "cb") for seed in (0, 1)]  # stsb: a continuous score (Spearman), not a count
    # one torch thread, as each pool worker on 2 cores has: float sums then happen in the same order (with 2
    # threads the scores differ in the 4th decimal, the same finetune's run-to-run noise across thread counts)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with Store(tmp_path / "local.db") as store:
        here = {r.key: r for r in run_specs(specs, store, LocalExecutor())}
    monkeypatch.delenv("OMP_NUM_THREADS")
    with Store(tmp_path / "pool.db") as store:
        pooled = {r.key: r for r in run_specs(specs, store, make_executor("pool", jobs=available_cores()))}
        assert len(store.results()) == len(specs)  # the driver stored every result
    assert here.keys() == pooled.keys() == {spec.key() for spec in specs}
    for key, result in here.items():
        assert pooled[key].metrics == result.metrics, (result.task_name, result.seed)
        assert pooled[key].device == result.device == "cpu"
    assert len({r.score for r in here.values() if r.task_name == "stsb"}) == 2  # seeds differ: a real comparison


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def _is_pool_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "spawn_main" in command and "resource_tracker" not in command


def _stored(db: Path) -> dict[str, float]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT key, score FROM finetune_results").fetchall())


def test_kill_9_of_a_pool_worker_stops_in_one_line_and_the_rerun_resumes(shared_data, tmp_path):
    bases = [save_tiny_bert(tmp_path / f"tiny{seed}", seed=seed) for seed in range(2)]
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "pool", "targets": [str(shared_data / t) for t in ("cb", "stsb")]}))
    db = tmp_path / "pool.db"
    settings = {**FAST, "epochs": 12}
    command = [sys.executable, "-m", "upcycle", "bench", "--suite", str(suite), "--base", str(bases[0]),
               "--candidates", str(bases[1]), "--seeds", "2", "--executor", "pool", "--jobs", "2", "--db", str(db),
               *(arg for key, value in settings.items() for arg in ("--set", f"{key}={value}"))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", UPCYCLE_DEVICE="cpu")
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 180
    while time.time() < deadline and driver.poll() is None:
        if db.exists() and _stored(db):
            break
        time.sleep(0.2)
    workers = [pid for pid in _children(driver.pid) if _is_pool_worker(pid)]
    assert driver.poll() is None and workers, "the grid finished (or never started) before a worker could be killed"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 2, stderr[-2000:]
    assert ("A worker process died (" in stderr
            and "Finished results are kept; rerun the same command to resume." in stderr)
    assert "Traceback" not in stderr
    kept = _stored(db)
    assert 1 <= len(kept) < 8  # (base + 1 candidate) x 2 targets x 2 seeds
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"({len(kept)} stored, {8 - len(kept)} to run, pool)" in rerun.stdout
    final = _stored(db)
    assert len(final) == 8 and all(final[key] == score for key, score in kept.items())


def test_zoo_build_through_a_pool_registers_the_same_experts(tiny_bert, shared_data, tmp_path, monkeypatch):
    from upcycle.zoo import build_zoo

    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as each pool worker on 2 cores: the same float sums
    sources = [str(shared_data / "cb"), str(shared_data / "poem_sentiment")]
    with Store(tmp_path / "here.db") as store:
        here = {entry.source_task: result.metrics
                for entry, result, _ in build_zoo(store, base=str(tiny_bert), sources=sources, out=tmp_path / "a",
                                                  overrides=FAST)}
    monkeypatch.delenv("OMP_NUM_THREADS")
    with Store(tmp_path / "pool.db") as store:
        built = list(build_zoo(store, base=str(tiny_bert), sources=sources, out=tmp_path / "b", overrides=FAST,
                               executor=make_executor("pool", jobs=2)))
        assert {entry.source_task: result.metrics for entry, result, _ in built} == here
        assert not any(cached for _, _, cached in built)
        for entry, result, _ in built:
            assert entry.name == f"{tiny_bert.name}-{entry.source_task}" and entry.base_fingerprint is not None
            assert store.get_result(result.key) is not None and (tmp_path / "b" / entry.name).is_dir()
        again = list(build_zoo(store, base=str(tiny_bert), sources=sources, out=tmp_path / "b", overrides=FAST,
                               executor=make_executor("pool", jobs=2)))
        assert all(cached for _, _, cached in again)  # nothing is trained twice
