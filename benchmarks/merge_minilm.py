"""Merged MiniLM experts against the experts themselves and vanilla MiniLM (driven by merge_minilm.sh).

``prepare``: merges four zoo experts three ways (uniform average; TIES at density 0.5; task arithmetic with
lambda chosen on the source tasks' validation splits) and registers the merges in the zoo.

``report``: measures every model's multi-task accuracy with re-trained heads (a logistic-regression probe on
frozen mean-pooled features, fitted on each source task's training sample and scored on its test split;
cached), reads the ``merge4-minilm`` bench (each model finetuned as a starting point on four held-out
targets, 2 seeds) and writes ``benchmarks/results/merge_minilm.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from upcycle.checkpoints import resolve_checkpoint
from upcycle.merging import merge
from upcycle.ranking import grid_frame, load_bench
from upcycle.report import write_atomic
from upcycle.selection.context import Sample
from upcycle.store import Store
from upcycle.tasks import load_task
from upcycle.training import embed
from upcycle.zoo import register

SOURCES = ("ag_news", "dair_emotion", "esnli", "sst2")
LAMBDAS = (0.2, 0.4, 0.6, 0.8, 1.0)
TRAIN, EVAL = 1000, 1000  # probe training examples per source task; test (or validation) examples scored
RESULTS = Path("benchmarks/results")


def expert(source: str, experts: Path) -> str:
    return str(experts / f"minilm-{source}")


def configs(experts: Path, lam: float) -> dict[str, dict]:
    models = [expert(s, experts) for s in SOURCES]
    return {
        "merge-average": {"merge_method": "linear", "models": [{"model": m} for m in models]},
        "merge-ties": {"merge_method": "ties", "base_model": "minilm", "parameters": {"lambda": 1.0},
                       "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.5}} for m in models]},
        "merge-task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "minilm",
                                  "parameters": {"lambda": lam},
                                  "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models]},
    }


class ProbeCache:
    """Probe accuracies by (model fingerprint, task, split), kept in a JSON file so reruns are free."""

    def __init__(self, file: Path):
        self.file = file
        self.data = json.loads(file.read_text()) if file.exists() else {}

    def accuracy(self, folder: str, task_name: str, split: str) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        checkpoint = resolve_checkpoint(folder)
        key = f"{checkpoint.fingerprint}:{task_name}:{split}:{TRAIN}:{EVAL}"
        if key not in self.data:
            task = load_task(task_name)
            train = Sample(TRAIN, 0, "train").take(task)
            scored = Sample(EVAL, 0, split).take(task)
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
            probe.fit(embed(checkpoint, train), np.asarray(train.labels))
            self.data[key] = float(probe.score(embed(checkpoint, scored), np.asarray(scored.labels)))
            self.file.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        return self.data[key]

    def mean(self, folder: str, split: str) -> float:
        return float(np.mean([self.accuracy(folder, s, split) for s in SOURCES]))


def prepare(run: Path, db: Path, experts: Path) -> None:
    cache = ProbeCache(run / "probes.json")
    chosen_file = run / "lambda.json"
    if chosen_file.exists():
        search = json.loads(chosen_file.read_text())
    else:  # task arithmetic's lambda: best mean probe accuracy on the source tasks' validation splits
        search = {"validation_accuracy": {}}
        for lam in LAMBDAS:
            folder = run / "search" / f"task_arithmetic-{lam}"
            if not folder.exists():
                merge(configs(experts, lam)["merge-task_arithmetic"], folder)
            search["validation_accuracy"][str(lam)] = cache.mean(str(folder), "validation")
            print(f"lambda {lam}: validation probe accuracy {search['validation_accuracy'][str(lam)]:.4f}", flush=True)
        search["lambda"] = float(max(search["validation_accuracy"], key=search["validation_accuracy"].get))
        chosen_file.write_text(json.dumps(search, indent=1))
    timings = {}
    with Store(db) as store:
        for name, config in configs(experts, search["lambda"]).items():
            folder = run / name
            if not folder.exists():
                started = time.perf_counter()
                merge(config, folder)
                timings[name] = time.perf_counter() - started
            register(store, resolve_checkpoint(folder), name=name)
    if timings:
        (run / "merge_seconds.json").write_text(json.dumps(timings, indent=1))


def bootstrap_ci(values: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [rng.choice(values, len(values)).mean() for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(run: Path, db: Path, experts: Path, bench_name: str) -> None:
    cache = ProbeCache(run / "probes.json")
    search = json.loads((run / "lambda.json").read_text())
    models = {"minilm (vanilla)": "minilm", **{f"expert {s}": expert(s, experts) for s in SOURCES},
              **{name: str(run / name) for name in configs(experts, 1)}}
    probes = {label: {s: cache.accuracy(folder, s, "test") for s in SOURCES} for label, folder in models.items()}
    with Store(db) as store:
        bench = load_bench(store, bench_name)
        frame = grid_frame(bench, store)
    base_scores = frame[frame.candidate == bench.base.checkpoint.name].set_index(["target", "seed"]).score
    starting: dict[str, dict] = {}
    for label, folder in models.items():
        name = "minilm" if folder == "minilm" else Path(folder).name
        rows = frame[frame.candidate == name].set_index(["target", "seed"]).score
        if rows.empty:
            continue
        gains = 100 * (rows - base_scores.reindex(rows.index))
        per_target = gains.groupby(level="target").mean()
        low, high = bootstrap_ci(gains.to_numpy()) if label != "minilm (vanilla)" else (0.0, 0.0)
        starting[label] = {"per_target": per_target.round(2).to_dict(), "mean_gain": float(gains.mean()),
                           "ci95": [low, high], "mean_score": float(rows.mean()), "cells": int(len(rows))}
    result = {"sources": list(SOURCES), "lambda_search": search, "probe_accuracy": probes,
              "probe_setting": {"train": TRAIN, "test": EVAL, "features": "mean-pooled last layer, frozen"},
              "starting_point": starting, "bench": bench_name, "targets": [t.name for t in bench.targets],
              "seeds": list(bench.seeds), "protocol": bench.protocol.name}
    write_atomic(RESULTS / "merge_minilm.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
    write_atomic(RESULTS / "merge_minilm.md", markdown(result))
    print((RESULTS / "merge_minilm.md").read_text())


def markdown(result: dict) -> str:
    sources, targets = result["sources"], result["targets"]
    lines = [
        "# Merging MiniLM experts",
        "",
        "Generated by `bash benchmarks/merge_minilm.sh` (experts from the recycling zoo, quick+ protocol).",
        f"Merged experts: {', '.join(sources)}. Merges: uniform average (`linear`), TIES (density 0.5, lambda 1), "
        f"task arithmetic with lambda = {result['lambda_search']['lambda']} chosen on the source tasks' validation "
        "splits (probe accuracy; searched " + ", ".join(result["lambda_search"]["validation_accuracy"]) + ").",
        "",
        "## Multi-task accuracy (heads re-trained as linear probes)",
        "",
        f"A logistic regression on frozen mean-pooled features, fitted on {result['probe_setting']['train']} "
        f"training examples of each source task and scored on up to {result['probe_setting']['test']} test examples.",
        "",
        "| model | " + " | ".join(sources) + " | mean |",
        "|---|" + "---:|" * (len(sources) + 1),
    ]
    for label, scores in result["probe_accuracy"].items():
        values = [scores[s] for s in sources]
        lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in values)
                     + f" | {100 * np.mean(values):.1f} |")
    lines += [
        "",
        "## As a starting point (finetuned on held-out targets)",
        "",
        f"Gain in points over vanilla MiniLM, mean of seeds {result['seeds']}, {result['protocol']} protocol; "
        "targets share no data with the merged experts. CI: bootstrap over (target, seed) cells.",
        "",
        "| model | " + " | ".join(targets) + " | mean gain | 95% CI |",
        "|---|" + "---:|" * (len(targets) + 2),
    ]
    for label, row in result["starting_point"].items():
        if label == "minilm (vanilla)":
            continue
        cells = [f"{row['per_target'].get(t, float('nan')):+.1f}" for t in targets]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['mean_gain']:+.2f} | "
                     f"[{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}] |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "report"])
    parser.add_argument("--run", type=Path, default=Path("runs/merge_minilm"))
    parser.add_argument("--db", type=Path, default=Path("runs/recycling_minilm/upcycle.db"))
    parser.add_argument("--experts", type=Path, default=Path("runs/recycling_minilm/experts"))
    parser.add_argument("--bench", default="merge4-minilm")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.run.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        prepare(args.run, args.db, args.experts)
    else:
        report(args.run, args.db, args.experts, args.bench)


if __name__ == "__main__":
    main()
