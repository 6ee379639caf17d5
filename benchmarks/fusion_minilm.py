"""Report of the ColD Fusion run (driven by fusion_minilm.sh, after ``upcycle fuse`` has run).

Trains the multitask baseline (one MiniLM body on all six contributors' data at once, a head per task, with
as many example passes as the fusion run's contributors made), evaluates it on the run's held-out targets
in the same bench as the fused bases, and writes

* ``benchmarks/results/fusion_minilm.csv``: one row per (model, iteration, eval task, seed) with the score
  and the gain over vanilla MiniLM's mean on that task (points);
* ``benchmarks/results/fusion_minilm.md``: the curve of average gain over iterations with 95% bootstrap
  intervals, against vanilla, one-shot fusing (iteration 1) and the multitask baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from upcycle.api import register
from upcycle.bench import grid_frame, run_bench
from upcycle.execute import LocalExecutor
from upcycle.fusion import FusionState, fusion_bench, train_multitask
from upcycle.gains import bootstrap_gain_interval
from upcycle.store import Store

RESULTS = Path("benchmarks/results")


def scores_by_target(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {target: rows.sort_values("seed")["score"].to_numpy(float) for target, rows in frame.groupby("target")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the fusion run folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the .csv/.md/.json go")
    args = parser.parse_args()

    state = FusionState.model_validate_json((args.out / "fusion.json").read_text())
    config = state.config
    if len(state.iterations) < config.iterations:
        raise SystemExit(f"{args.out}: the fusion run has {len(state.iterations)} of {config.iterations} "
                         "iterations; run upcycle fuse first.")
    # the same number of example passes as the contributors made: iterations x K x max_train x epochs
    passes = config.iterations * config.per_iteration * (config.protocol.max_train or 0) * config.protocol.epochs
    epochs = max(1, round(passes / (len(config.contributors) * (config.protocol.max_train or 1))))
    protocol = config.protocol.with_overrides({"epochs": epochs})
    with Store(args.db) as store:
        multitask = train_multitask(config.base.reference, list(config.contributors), args.out / "multitask",
                                    protocol=protocol, seed=config.seed)
        register(store, multitask, name=f"{config.name}-multitask")
        paths = [r.fused_path for r in state.iterations if r.avg_gain is not None] + [str(multitask.path)]
        bench = fusion_bench(state, store, paths)
        for result, done, total in run_bench(bench, store, LocalExecutor()):
            print(f"{result.base_name} -> {result.task_name} seed {result.seed}: {result.score:.4f} ({done}/{total})")
        grid = grid_frame(bench, store)

    iteration_of = {r.fused_fingerprint: r.iteration for r in state.iterations}
    vanilla = grid[grid["is_base"]]
    vanilla_mean = vanilla.groupby("target")["score"].mean()
    grid = grid.assign(
        model=np.where(grid["is_base"], "vanilla",
                       np.where(grid["fingerprint"].isin(iteration_of), "fused", "multitask")),
        # 0 for vanilla MiniLM, the fusion iteration for fused bases, empty for the multitask baseline
        iteration=grid["fingerprint"].map(iteration_of).astype("Int64").mask(grid["is_base"], 0),
        gain=(grid["score"] - grid["target"].map(vanilla_mean)) * 100,
    )
    order = grid["model"].map({"vanilla": 0, "fused": 1, "multitask": 2})
    table = grid.assign(order=order).sort_values(["order", "iteration", "target", "seed"]).rename(
        columns={"target": "eval_task"})[["model", "iteration", "eval_task", "seed", "metric", "score", "gain"]]
    args.results.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.results / "fusion_minilm.csv", index=False, float_format="%.6g")

    base_scores = scores_by_target(vanilla)
    targets = sorted(base_scores)
    rows, summary = [], {}
    models = [("vanilla MiniLM", vanilla)] + [
        (f"iteration {r.iteration}" + (" (one-shot fusing)" if r.iteration == 1 else ""),
         grid[grid["fingerprint"] == r.fused_fingerprint]) for r in state.iterations if r.avg_gain is not None
    ] + [(f"multitask ({epochs} epoch(s) on all {len(config.contributors)} tasks)", grid[grid["model"] == "multitask"])]
    for label, frame in models:
        own = scores_by_target(frame)
        gains = {t: (own[t].mean() - base_scores[t].mean()) * 100 for t in targets}
        average = float(np.mean(list(gains.values())))
        low, high = (0.0, 0.0) if label.startswith("vanilla") else bootstrap_gain_interval(own, base_scores)
        summary[label] = {"avg_gain": average, "ci": [low, high], "per_target": gains}
        interval = "" if label.startswith("vanilla") else f"[{low:+.2f}, {high:+.2f}]"
        rows.append(f"| {label} | {average:+.2f} | {interval} | "
                    + " | ".join(f"{own[t].mean() * 100:.1f} ({gains[t]:+.1f})" for t in targets) + " |")
    final = grid[grid["fingerprint"] == state.iterations[-1].fused_fingerprint]
    one_shot = grid[grid["fingerprint"] == state.iterations[0].fused_fingerprint]
    multi = grid[grid["model"] == "multitask"]
    vs_one_shot = bootstrap_gain_interval(scores_by_target(final), scores_by_target(one_shot))
    vs_multitask = bootstrap_gain_interval(scores_by_target(final), scores_by_target(multi))

    contributors = ", ".join(c.name for c in config.contributors)
    lines = [
        "# ColD Fusion of MiniLM: does the fused base become a better starting point?",
        "",
        "Written by `bash benchmarks/fusion_minilm.sh` (`make fusion`); every cell is in `fusion_minilm.csv`.",
        "",
        f"* Contributors ({len(config.contributors)}): {contributors}. Each iteration draws "
        f"{config.per_iteration}; each finetunes the current base on {config.protocol.max_train} of its own "
        f"examples for {config.protocol.epochs} epoch(s) (`{config.protocol.name}` protocol, seed per "
        "contributor and iteration) in its own process; the repository averages the bodies (heads dropped) "
        f"with `upcycle merge` ({config.merge_method}).",
        f"* Evaluation: every fused base is finetuned as a starting point on {len(targets)} held-out targets "
        f"({', '.join(targets)}; no contributor shares data with them), {config.eval_seeds} seeds, "
        f"`{config.eval_protocol.name}` protocol; gain = score minus vanilla MiniLM's mean score on the target, "
        "in points. Intervals: 95% bootstrap over targets and seeds (the vanilla seeds resampled too).",
        f"* Multitask baseline: one body trained on all {len(config.contributors)} contributors' data at once "
        f"(a head per task, {epochs} epoch(s) over {config.protocol.max_train} examples per task: "
        f"{epochs * len(config.contributors) * (config.protocol.max_train or 0)} example passes against the "
        f"contributors' {passes}).",
        "",
        "| model | avg gain | 95% CI | " + " | ".join(f"{t}: score (gain)" for t in targets) + " |",
        "|---|---|---|" + "---|" * len(targets),
        *rows,
        "",
        f"Final fused base minus one-shot fusing: {summary[models[-2][0]]['avg_gain'] - summary[models[1][0]]['avg_gain']:+.2f} "
        f"points, 95% CI [{vs_one_shot[0]:+.2f}, {vs_one_shot[1]:+.2f}]. Final fused base minus multitask: "
        f"{summary[models[-2][0]]['avg_gain'] - summary[models[-1][0]]['avg_gain']:+.2f} points, 95% CI "
        f"[{vs_multitask[0]:+.2f}, {vs_multitask[1]:+.2f}].",
        "",
    ]
    (args.results / "fusion_minilm.md").write_text("\n".join(lines))
    (args.results / "fusion_minilm.json").write_text(json.dumps(
        {"summary": summary, "final_minus_one_shot_ci": vs_one_shot, "final_minus_multitask_ci": vs_multitask},
        indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
