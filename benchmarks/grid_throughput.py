"""Grid throughput: the same small MiniLM grid with the local executor (anchor), the pool (one single-threaded
worker per core) and Ray (2 workers).

Each arm trains the identical specs into a fresh store, so nothing is cached; arms alternate over repeats.
The pool's time includes spawning its workers (each imports torch and transformers once). The Ray arm's time
includes starting a local Ray instance and its workers (what a user pays), and is also
reported from the first submitted task on. Writes ``benchmarks/results/grid_throughput.json``.

Ray binds the machine's address unless it runs in a private network namespace; on these machines:
    unshare -n sh -c 'ip link set lo up && HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grid_throughput.py'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from upcycle.execute import LocalExecutor, RayExecutor, make_executor, run_specs
from upcycle.report import write_atomic
from upcycle.specs import FinetuneSpec
from upcycle.store import Store

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TARGETS = ["cb", "wnli", "poem_sentiment", "trec_fine"]
OVERRIDES = {"max_train": 256, "max_eval": 256, "train_precision": "bf16"}


def grid(seeds: int) -> list[FinetuneSpec]:
    return [FinetuneSpec.create("minilm", str(DATA / target), seed=seed, overrides=OVERRIDES)
            for seed in range(seeds) for target in TARGETS]


def run_arm(specs: list[FinetuneSpec], executor) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "arm.db") as store:
        started = time.perf_counter()
        scores = {result.key: result.score for result in run_specs(specs, store, executor)}
        return time.perf_counter() - started, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "grid_throughput.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    specs = grid(args.seeds)
    local_times, pool_times, ray_times, ray_warm_times, differences = [], [], [], [], []
    os.environ["UPCYCLE_DEVICE"] = "cpu"
    for repeat in range(args.repeats):
        local_seconds, local_scores = run_arm(specs, LocalExecutor())
        pool_seconds, pool_scores = run_arm(specs, make_executor("pool"))
        pool_times.append(pool_seconds)
        differences += [abs(local_scores[key] - pool_scores[key]) for key in local_scores]
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_seconds, ray_scores = run_arm(specs, RayExecutor(cpus_per_job=1))
        ray.shutdown()
        total = time.perf_counter() - started
        local_times.append(local_seconds)
        ray_times.append(total)
        ray_warm_times.append(ray_seconds)  # from the first submitted task, after ray.init returned
        differences += [abs(local_scores[key] - ray_scores[key]) for key in local_scores]
        print(f"repeat {repeat}: local {local_seconds:.1f}s, pool {pool_seconds:.1f}s, ray {total:.1f}s "
              f"(tasks {ray_seconds:.1f}s)", flush=True)

    ratios = [local / remote for local, remote in zip(local_times, ray_times)]
    task_ratios = [local / remote for local, remote in zip(local_times, ray_warm_times)]
    pool_ratios = [local / pooled for local, pooled in zip(local_times, pool_times)]
    result = {
        "grid": {"base": "minilm", "targets": TARGETS, "seeds": args.seeds, "specs": len(specs),
                 "overrides": OVERRIDES},
        "anchor": "LocalExecutor: one process, torch threads = 2 cores",
        "pool": f"make_executor('pool') on the CPU: {os.cpu_count()} spawned workers x 1 torch thread, "
                "start-up included",
        "ray": "RayExecutor on a local Ray instance, 2 workers x 1 CPU (OMP_NUM_THREADS=1 each)",
        "local_seconds": local_times,
        "pool_seconds": pool_times,
        "pool_speedup_vs_local": {"mean": statistics.mean(pool_ratios),
                                  "std": statistics.stdev(pool_ratios) if len(pool_ratios) > 1 else 0.0},
        "ray_seconds_including_startup": ray_times,
        "ray_seconds_tasks_only": ray_warm_times,
        "speedup_vs_local": {"mean": statistics.mean(ratios),
                             "std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0},
        "speedup_vs_local_tasks_only": {"mean": statistics.mean(task_ratios),
                                        "std": statistics.stdev(task_ratios) if len(task_ratios) > 1 else 0.0},
        "max_abs_score_difference": max(differences),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("pool_speedup_vs_local", "speedup_vs_local", "speedup_vs_local_tasks_only",
                                             "max_abs_score_difference")}, indent=2))


if __name__ == "__main__":
    main()
