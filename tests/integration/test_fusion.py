"""ColD Fusion on a tiny BERT and the shared datasets: the loop, privacy, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_bert
from safetensors.torch import load_file, save_file
from test_ray_executor import ISOLATE, _can_unshare

from upcycle.checkpoints import CheckpointRef, resolve_checkpoint
from upcycle.errors import ConfigError, UpcycleError
from upcycle.execute import LocalExecutor, ProcessExecutor
from upcycle.fusion import (
    Contribution,
    ContributionRequest,
    Contributor,
    FusionConfig,
    bench_evaluator,
    contribute,
    fusion_bench,
    run_fusion,
    train_multitask,
)
from upcycle.fusion import contributor as contributor_module
from upcycle.fusion.loop import STATE_FILE, load_state, merge_config
from upcycle.protocols import get_protocol
from upcycle.ranking import build_leaderboard, grid_frame
from upcycle.store import Store
from upcycle.training import multitask as multitask_module
from upcycle.zoo import register

TINY = {"max_train": 48, "max_eval": 32, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0}
GUARDED: list[str] = []  # folders this process must not open (the driver side of the privacy test)


def _guard(event: str, args: tuple) -> None:
    if GUARDED and event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], str | Path):
        path = os.path.realpath(os.fspath(args[0]))  # symlinks resolved on both sides (CI's ../shared is one)
        if any(path == g or path.startswith(g + os.sep) for g in GUARDED):
            raise PermissionError(f"the driver opened contributor data: {path}")


def guard(*folders: str) -> None:
    GUARDED[:] = [os.path.realpath(folder) for folder in folders]


sys.addaudithook(_guard)


class InProcess(LocalExecutor):
    """Contributors run right here (no privacy): for tests of the loop's logic only."""

    def __init__(self):
        self.requests: list[ContributionRequest] = []

    def map(self, function, jobs, describe):
        self.requests.extend(jobs)
        yield from super().map(function, jobs, describe)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("fusion") / "tiny")


def fusion_config(tiny: Path, shared_data: Path, **changes) -> FusionConfig:
    settings = dict(
        name="tinyfuse", base=CheckpointRef.of(resolve_checkpoint(tiny)),
        contributors=tuple(Contributor(name=n, data=str(shared_data / n)) for n in ("sst2", "mrpc", "ag_news")),
        iterations=2, per_iteration=2, protocol=get_protocol("quick", TINY), eval_targets=(str(shared_data / "cb"),),
        eval_seeds=1, eval_protocol=get_protocol("quick", TINY))
    settings.update(changes)
    return FusionConfig(**settings)


def body(folder: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's floating tensors by name without the task model's ``bert.`` prefix, heads left out."""
    checkpoint = resolve_checkpoint(folder)
    tensors = {}
    for file in checkpoint.weight_files:
        for name, value in load_file(file).items():
            if value.is_floating_point() and not name.startswith("classifier"):
                tensors[name.removeprefix("bert.")] = value
    return tensors


def test_fusion_contributes_fuses_evaluates_and_registers(tiny, shared_data, tmp_path):
    config = fusion_config(tiny, shared_data)
    guard(*(c.data for c in config.contributors))
    try:
        with Store(tmp_path / "f.db") as store:
            state = run_fusion(config, tmp_path / "run", ProcessExecutor(), store=store,
                               evaluate=bench_evaluator(store))
            bench = fusion_bench(state, store, [r.fused_path for r in state.iterations])
            grid = grid_frame(bench, store)
            board = build_leaderboard(bench, store)
            zoo = {entry.name: entry for entry in store.checkpoints()}
    finally:
        GUARDED.clear()
    assert [r.iteration for r in state.iterations] == [1, 2]
    first, second = state.iterations
    assert first.base_fingerprint == config.base.fingerprint and second.base_fingerprint == first.fused_fingerprint
    assert all(len(r.contributors) == 2 and r.accepted and r.avg_gain is not None for r in state.iterations)
    # every contributor of iteration 2 finetuned iteration 1's fused base
    for name in second.contributors:
        provenance = resolve_checkpoint(tmp_path / "run" / "iter-002" / "contributors" / name).provenance
        assert provenance["base_fingerprint"] == first.fused_fingerprint
    # the fused base is the uniform average of the contributors' bodies, heads dropped
    fused = body(second.fused_path)
    parts = [body(tmp_path / "run" / "iter-002" / "contributors" / n) for n in second.contributors]
    assert set(fused) == set(parts[0])
    for name, value in fused.items():
        assert torch.allclose(value, (parts[0][name] + parts[1][name]) / 2, atol=1e-6), name
    assert resolve_checkpoint(second.fused_path).config["architectures"] == ["BertModel"]
    # evaluated against the vanilla base on the held-out target, registered, on the leaderboard
    assert set(grid["candidate"]) == {"tiny", "tinyfuse-iter1", "tinyfuse-iter2"}
    assert zoo["tinyfuse-iter2"].base_fingerprint == first.fused_fingerprint
    assert {row.candidate for row in board.rows} >= {"tinyfuse-iter1", "tinyfuse-iter2"}
    saved = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert len(saved["iterations"]) == 2


def test_the_guard_catches_a_driver_that_reads_contributor_data(tiny, shared_data, tmp_path):
    config = fusion_config(tiny, shared_data)
    request = ContributionRequest(contributor=config.contributors[0], base=config.base, protocol=config.protocol,
                                  seed=0, out=str(tmp_path / "c"), iteration=1)
    guard(config.contributors[0].data)
    try:
        with pytest.raises(UpcycleError, match="the driver opened contributor data"):
            contribute(request)  # in-process: this is what the local and Ray workers keep out of the driver
    finally:
        GUARDED.clear()


def test_rollback_gate_rejects_an_iteration_whose_gain_drops(tiny, shared_data, tmp_path):
    config = fusion_config(tiny, shared_data, iterations=3, rollback=True, tolerance=0.5)
    gains = {1: 2.0, 2: 1.0, 3: 2.2}
    workers = InProcess()
    state = run_fusion(config, tmp_path / "run", workers, evaluate=lambda s, i: (gains[i], gains[i] - 1, gains[i] + 1))
    assert [r.accepted for r in state.iterations] == [True, False, True]
    first, rejected, third = state.iterations
    assert third.base_fingerprint == first.fused_fingerprint != rejected.fused_fingerprint
    assert state.current_base()[1] == third.fused_fingerprint
    # a finished run is a no-op to rerun; one more iteration extends it by exactly one; other settings are refused
    again = run_fusion(config, tmp_path / "run", workers)
    assert again.iterations == state.iterations and len(workers.requests) == 6
    longer = run_fusion(config.model_copy(update={"iterations": 4}), tmp_path / "run", workers)
    assert longer.iterations[:3] == state.iterations and [r.iteration for r in longer.iterations] == [1, 2, 3, 4]
    assert len(workers.requests) == 8 and {r.iteration for r in workers.requests[6:]} == {4}
    assert longer.iterations[3].base_fingerprint == third.fused_fingerprint
    with pytest.raises(ConfigError, match="another fusion run"):
        load_state(tmp_path / "run", fusion_config(tiny, shared_data, iterations=3, seed=1))


def test_bad_contributions_are_rejected_by_name_and_the_rest_fused(tiny, shared_data, tmp_path):
    config = fusion_config(tiny, shared_data, iterations=1, per_iteration=3, eval_targets=())

    class Corrupting(InProcess):
        def map(self, function, jobs, describe):
            for request, payload in super().map(function, jobs, describe):
                contribution = Contribution.model_validate_json(payload)
                if contribution.contributor == "mrpc":
                    file = Path(contribution.checkpoint_path) / "model.safetensors"
                    tensors = load_file(file)
                    tensors["bert.pooler.dense.weight"][0, 0] = float("nan")
                    save_file(tensors, file, metadata={"format": "pt"})
                yield request, payload

    state = run_fusion(config, tmp_path / "run", Corrupting())
    (record,) = state.iterations
    assert sorted(record.contributors) == ["ag_news", "sst2"]
    assert "NaN" in record.rejected["mrpc"] and "pooler.dense.weight" in record.rejected["mrpc"]
    assert all(torch.isfinite(v).all() for v in body(record.fused_path).values())


def test_bad_settings_and_a_missing_dataset_are_clear_errors(tiny, shared_data, tmp_path):
    with pytest.raises(ValueError, match="held out"):
        fusion_config(tiny, shared_data, eval_targets=(str(shared_data / "sst2"),))
    with pytest.raises(ValueError, match="per_iteration"):
        fusion_config(tiny, shared_data, per_iteration=4)
    with pytest.raises(ValueError, match="merge_method"):
        fusion_config(tiny, shared_data, merge_method="soup")
    with pytest.raises(ValueError, match="unknown merge parameter"):
        fusion_config(tiny, shared_data, merge_method="ties", merge_parameters={"densty": 0.5})
    ties = fusion_config(tiny, shared_data, merge_method="ties", merge_parameters={"density": 0.5, "lambda": 1.0})
    spec = merge_config(ties, "BASE", ["a", "b"])
    assert spec["merge_method"] == "ties" and spec["base_model"] == "BASE" and spec["parameters"] == {"lambda": 1.0}
    assert all(m["parameters"] == {"density": 0.5} for m in spec["models"])
    with Store(tmp_path / "taken.db") as store:  # another run's fused base already holds the zoo name
        register(store, resolve_checkpoint(tiny), name="tinyfuse-iter1")
        with pytest.raises(ConfigError, match="another --name"):
            run_fusion(fusion_config(tiny, shared_data), tmp_path / "never", InProcess(), store=store)
    missing = (Contributor(name="ghost", data=str(tmp_path / "nowhere")),
               Contributor(name="sst2", data=str(shared_data / "sst2")))
    config = fusion_config(tiny, shared_data, contributors=missing, iterations=1, eval_targets=())
    with pytest.raises(UpcycleError, match="contributor ghost \\(iteration 1\\) failed.*not found"):
        run_fusion(config, tmp_path / "run", ProcessExecutor())
    assert not (tmp_path / "run" / STATE_FILE).exists()


def _finished(folder: Path) -> dict[str, int]:
    """Contributions saved so far under ``folder`` (name -> weights mtime); staging folders start with '.'."""
    return {path.parent.name: path.stat().st_mtime_ns for path in folder.glob("[!.]*/model.safetensors")}


def test_kill_9_mid_iteration_resumes_without_redoing_finished_contributors(tiny, shared_data, tmp_path):
    command = [sys.executable, "-m", "upcycle", "fuse", "--base", str(tiny), "--contributors", "sst2,mrpc,ag_news",
               "--iterations", "2", "--per-iteration", "3", "--out", str(tmp_path / "run"), "--db",
               str(tmp_path / "f.db"), *(arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}"))]
    env = dict(os.environ, UPCYCLE_DATA_DIR=str(shared_data), PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    contributors = tmp_path / "run" / "iter-001" / "contributors"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    while not _finished(contributors) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers, as in a crash of the machine
    driver.wait()
    before = _finished(contributors)
    assert before and len(before) < 3, "the kill should land mid-iteration"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"({len(before)} already contributed, {3 - len(before)} to train)" in done.stderr
    after = _finished(contributors)
    assert {name: after[name] for name in before} == before  # finished contributors were not trained again
    assert len(after) == 3 and not list(contributors.glob(".*partial*"))
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert [r["iteration"] for r in state["iterations"]] == [1, 2]


def test_contribution_results_carry_no_examples(tiny, shared_data, tmp_path, monkeypatch):
    config = fusion_config(tiny, shared_data)
    request = ContributionRequest(contributor=config.contributors[1], base=config.base, protocol=config.protocol,
                                  seed=3, out=str(tmp_path / "c"), iteration=1)
    result = contribute(request)
    assert set(Contribution.model_fields) == {"contributor", "iteration", "checkpoint_path", "fingerprint",
                                              "base_fingerprint", "seed", "n_train", "train_seconds", "worker_pid"}
    assert result.n_train == 48 and resolve_checkpoint(result.checkpoint_path).fingerprint == result.fingerprint
    weights = Path(result.checkpoint_path) / "model.safetensors"
    written = weights.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished contribution was trained again")

    monkeypatch.setattr(contributor_module, "run_finetune", no_training)
    found = contribute(request)  # found, not trained again: nothing trains, nothing is rewritten
    assert found.fingerprint == result.fingerprint and found.n_train is None and weights.stat().st_mtime_ns == written


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare to keep Ray on loopback and to itself")
def test_contributors_and_evaluation_run_as_ray_tasks_on_a_local_cluster(tiny, shared_data, tmp_path):
    """``upcycle fuse --executor ray`` in private network and PID namespaces (Ray on loopback only)."""
    fast = " ".join(f"--set {key}={value} --eval-set {key}={value}" for key, value in TINY.items())
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: held-out\ntargets: [{shared_data / 'cb'}]\n")
    inner = (f"ip link set lo up && echo driver pid $$ >&2 && exec {sys.executable} -m upcycle fuse --executor ray "
             f"--base {tiny} --contributors sst2,mrpc --iterations 1 --eval-suite {suite} --eval-seeds 1 "
             f"--out {tmp_path / 'run'} --db {tmp_path / 'f.db'} {fast}")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    # A `ray start` that died without `ray stop` leaves its address behind; Ray's own default (address=None) would
    # join it and hang (a CI run did, on port 6391 from the executor test). upcycle starts a new instance instead.
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:6391")
    env = dict(os.environ, UPCYCLE_DATA_DIR=str(shared_data), PYTHONPATH=str(Path(__file__).parents[2] / "src"),
               COLUMNS="200", RAY_TMPDIR=str(ray_tmp))
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run([*ISOLATE, "sh", "-c", inner], capture_output=True, text=True, env=env, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    made = dict(re.findall(r": (\w+) contributed \(.*worker pid (\d+)\)", done.stderr))
    driver = re.search(r"driver pid (\d+)", done.stderr).group(1)  # the shell's pid, which exec hands to upcycle
    assert sorted(made) == ["mrpc", "sst2"] and driver not in made.values()  # trained in Ray workers, not the driver
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    (record,) = state["iterations"]
    assert sorted(record["contributors"]) == ["mrpc", "sst2"] and record["avg_gain"] is not None


def test_multitask_baseline_trains_one_body_on_every_task(tiny, shared_data, tmp_path, monkeypatch):
    sources = [Contributor(name=n, data=str(shared_data / n)) for n in ("sst2", "stsb")]  # classes and regression
    protocol = get_protocol("quick", TINY)
    trained = train_multitask(tiny, sources, tmp_path / "mt", protocol=protocol)
    assert trained.config["architectures"] == ["BertModel"]
    assert trained.provenance["n_train"] == {"sst2": 48, "stsb": 48}
    moved = body(trained.path)
    start = body(tiny)
    assert set(moved) == set(start) and any(not torch.equal(moved[n], start[n]) for n in moved)
    weights = trained.path / "model.safetensors"
    written = weights.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the multitask baseline was trained again")

    monkeypatch.setattr(multitask_module, "train_step", no_training)
    again = train_multitask(tiny, sources, tmp_path / "mt", protocol=protocol)  # found, not trained again
    assert again.fingerprint == trained.fingerprint and weights.stat().st_mtime_ns == written
