"""Report of the ColD Fusion run (driven by fusion_minilm.sh, after ``upcycle fuse`` has run).

Trains the multitask baseline (one MiniLM body on all six contributors' data at once, a head per task, with
about as many example passes as the fusion run's contributors made), evaluates it with the fused bases on
the run's held-out targets, checks vanilla, one-shot fusing, the final fused base and multitask on a wider
held-out suite, and writes

* ``benchmarks/results/fusion_minilm.csv``: one row per (suite, model, iteration, eval task, seed) with the
  score and the gain over vanilla MiniLM's mean on that task (points);
* ``benchmarks/results/fusion_minilm.md`` and ``.json``: the curve of average gain over iterations with 95%
  bootstrap intervals, against vanilla, one-shot fusing (iteration 1) and the multitask baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from upcycle.execute import LocalExecutor
from upcycle.fusion import FusionState, fusion_bench, train_multitask
from upcycle.ranking import Bench, grid_frame, plan_bench, run_bench
from upcycle.ranking.gains import bootstrap_gain_interval, scores_by_target
from upcycle.report import write_atomic
from upcycle.store import Store
from upcycle.tasks import load_suite
from upcycle.zoo import register

RESULTS = Path("benchmarks/results")
WIDE_SUITE = "benchmarks/suites/fusion_minilm_wide.yaml"


def run(bench: Bench, store: Store) -> pd.DataFrame:
    for result, done, total in run_bench(bench, store, LocalExecutor()):
        print(f"{result.base_name} -> {result.task_name} seed {result.seed}: {result.score:.4f} ({done}/{total})")
    return grid_frame(bench, store)


def labelled(grid: pd.DataFrame, iteration_of: dict[str, int], suite: str) -> pd.DataFrame:
    """Cells with ``model`` (vanilla, fused, multitask), ``iteration`` (0 for vanilla, empty for multitask) and
    ``gain`` (points over vanilla's mean score on the target)."""
    vanilla_mean = grid[grid["is_base"]].groupby("target")["score"].mean()
    return grid.assign(
        suite=suite,
        model=np.where(grid["is_base"], "vanilla",
                       np.where(grid["fingerprint"].isin(iteration_of), "fused", "multitask")),
        iteration=grid["fingerprint"].map(iteration_of).astype("Int64").mask(grid["is_base"], 0),
        gain=(grid["score"] - grid["target"].map(vanilla_mean)) * 100,
    )


def comparison(grid: pd.DataFrame, models: list[tuple[str, pd.DataFrame]]) -> tuple[list[str], dict]:
    """Markdown rows (label, average gain, CI, per-target score and gain) and the same numbers as a dict."""
    base = scores_by_target(grid[grid["is_base"]])
    targets = sorted(base)
    rows, summary = [], {}
    for label, frame in models:
        own = scores_by_target(frame)
        gains = {t: (own[t].mean() - base[t].mean()) * 100 for t in targets}
        average = float(np.mean(list(gains.values())))
        is_base = frame["is_base"].all()
        low, high = (0.0, 0.0) if is_base else bootstrap_gain_interval(own, base)
        summary[label] = {"avg_gain": average, "ci": [low, high], "per_target": gains}
        rows.append(f"| {label} | {average:+.2f} | {'' if is_base else f'[{low:+.2f}, {high:+.2f}]'} | "
                    + " | ".join(f"{own[t].mean() * 100:.1f} ({gains[t]:+.1f})" for t in targets) + " |")
    header = ["| model | avg gain | 95% CI | " + " | ".join(f"{t}: score (gain)" for t in targets) + " |",
              "|---|---|---|" + "---|" * len(targets)]
    return header + rows, summary


def difference(grid: pd.DataFrame, a: str, b: str) -> dict:
    """Average score difference (points) of fingerprint ``a`` over ``b`` with a 95% bootstrap interval."""
    own, other = scores_by_target(grid[grid["fingerprint"] == a]), scores_by_target(grid[grid["fingerprint"] == b])
    mean = float(np.mean([(own[t].mean() - other[t].mean()) * 100 for t in own]))
    return {"difference": mean, "ci": list(bootstrap_gain_interval(own, other))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the fusion run folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the .csv/.md/.json go")
    parser.add_argument("--wide-suite", default=WIDE_SUITE, help="the wider held-out suite ('' to skip)")
    args = parser.parse_args()

    state = FusionState.model_validate_json((args.out / "fusion.json").read_text())
    config = state.config
    if len(state.iterations) < config.iterations:
        raise SystemExit(f"{args.out}: the fusion run has {len(state.iterations)} of {config.iterations} "
                         "iterations; run upcycle fuse first.")
    # about the contributors' example passes (iterations x K x max_train x epochs), spread over all tasks
    passes = config.iterations * config.per_iteration * (config.protocol.max_train or 0) * config.protocol.epochs
    epochs = max(1, round(passes / (len(config.contributors) * (config.protocol.max_train or 1))))
    evaluated = [r for r in state.iterations if r.avg_gain is not None]
    one_shot, final = state.iterations[0], state.iterations[-1]
    with Store(args.db) as store:
        multitask = train_multitask(config.base.reference, list(config.contributors), args.out / "multitask",
                                    protocol=config.protocol.with_overrides({"epochs": epochs}), seed=config.seed)
        register(store, multitask, name=f"{config.name}-multitask")
        iteration_of = {r.fused_fingerprint: r.iteration for r in state.iterations}
        curve = labelled(run(fusion_bench(state, store, [r.fused_path for r in evaluated] + [str(multitask.path)]),
                             store), iteration_of, "gate")
        wide = None
        if args.wide_suite:
            bench = plan_bench(store, base=config.base.reference, suite=load_suite(args.wide_suite),
                               seeds=config.eval_seeds, protocol=config.eval_protocol, name=f"{config.name}-wide",
                               candidates=[one_shot.fused_path, final.fused_path, str(multitask.path)])
            wide = labelled(run(bench, store), iteration_of, "wide")

    cells = pd.concat([curve, wide]) if wide is not None else curve
    order = cells["model"].map({"vanilla": 0, "fused": 1, "multitask": 2})
    table = cells.assign(order=order).sort_values(["suite", "order", "iteration", "target", "seed"]).rename(
        columns={"target": "eval_task"})[["suite", "model", "iteration", "eval_task", "seed", "metric", "score",
                                          "gain"]]
    args.results.mkdir(parents=True, exist_ok=True)
    write_atomic(args.results / "fusion_minilm.csv", table.to_csv(index=False, float_format="%.6g"))

    def models(grid: pd.DataFrame, records) -> list[tuple[str, pd.DataFrame]]:
        return ([("vanilla MiniLM", grid[grid["is_base"]])]
                + [(f"iteration {r.iteration}" + (" (one-shot fusing)" if r.iteration == 1 else ""),
                    grid[grid["fingerprint"] == r.fused_fingerprint]) for r in records]
                + [(f"multitask ({epochs} epoch(s) on all {len(config.contributors)} tasks)",
                    grid[grid["model"] == "multitask"])])

    curve_rows, curve_summary = comparison(curve, models(curve, evaluated))
    report = {"curve": curve_summary,
              "final_minus_one_shot": difference(curve, final.fused_fingerprint, one_shot.fused_fingerprint),
              "final_minus_multitask": difference(curve, final.fused_fingerprint, multitask.fingerprint)}
    names = ", ".join(c.name for c in config.contributors)
    targets = ", ".join(sorted(curve["target"].unique()))
    lines = [
        "# ColD Fusion of MiniLM: does the fused base become a better starting point?",
        "",
        "Written by `bash benchmarks/fusion_minilm.sh` (`make fusion`); every cell is in `fusion_minilm.csv`.",
        "",
        f"* Contributors ({len(config.contributors)}): {names}. Each of {config.iterations} iterations draws "
        f"{config.per_iteration}; each finetunes the current base on {config.protocol.max_train} of its own "
        f"examples for {config.protocol.epochs} epoch(s) at learning rate {config.protocol.learning_rate:g} "
        f"(`{config.protocol.name}` protocol, a seed per contributor and iteration) in its own process; the "
        f"repository fuses the bodies (heads dropped) with `upcycle merge` ({config.merge_method}).",
        f"* Evaluation: the fused bases of iterations {', '.join(str(r.iteration) for r in evaluated)} are "
        f"finetuned as starting points on held-out targets ({targets}; no contributor shares data with them), "
        f"{config.eval_seeds} seeds, `{config.eval_protocol.name}` protocol. Gain = score minus vanilla MiniLM's "
        "mean score on the target, in points; 95% bootstrap intervals over targets and seeds (vanilla's seeds "
        "resampled too).",
        f"* Multitask baseline: one body trained on all {len(config.contributors)} contributors' data at once "
        f"(a head per task, {epochs} epoch(s) over {config.protocol.max_train} examples per task: "
        f"{epochs * len(config.contributors) * (config.protocol.max_train or 0)} example passes against the "
        f"contributors' {passes}). Unlike fusion it needs all the data in one place.",
        "",
        "## The curve (the run's held-out targets)",
        "",
        *curve_rows,
        "",
        f"Final fused base minus one-shot fusing: {report['final_minus_one_shot']['difference']:+.2f} points, 95% CI "
        f"[{report['final_minus_one_shot']['ci'][0]:+.2f}, {report['final_minus_one_shot']['ci'][1]:+.2f}]. "
        f"Final fused base minus multitask: {report['final_minus_multitask']['difference']:+.2f} points, 95% CI "
        f"[{report['final_minus_multitask']['ci'][0]:+.2f}, {report['final_minus_multitask']['ci'][1]:+.2f}].",
        "",
    ]
    if wide is not None:
        wide_models = [m for m in models(wide, [one_shot, final]) if not m[1].empty]
        wide_rows, wide_summary = comparison(wide, wide_models)
        report.update(wide=wide_summary,
                      wide_final_minus_one_shot=difference(wide, final.fused_fingerprint, one_shot.fused_fingerprint),
                      wide_final_minus_multitask=difference(wide, final.fused_fingerprint, multitask.fingerprint))
        lines += [
            f"## A wider check ({wide['target'].nunique()} held-out targets)",
            "",
            "Added after the table above was seen, to narrow its intervals: every shared task that no contributor "
            "overlaps and whose vanilla finetune costs under 90 s in the recycling grid "
            f"(`{args.wide_suite}`), for vanilla, one-shot fusing, the final fused base and multitask.",
            "",
            *wide_rows,
            "",
            f"Final fused base minus one-shot fusing: {report['wide_final_minus_one_shot']['difference']:+.2f} points, "
            f"95% CI [{report['wide_final_minus_one_shot']['ci'][0]:+.2f}, "
            f"{report['wide_final_minus_one_shot']['ci'][1]:+.2f}]. Final fused base minus multitask: "
            f"{report['wide_final_minus_multitask']['difference']:+.2f} points, 95% CI "
            f"[{report['wide_final_minus_multitask']['ci'][0]:+.2f}, "
            f"{report['wide_final_minus_multitask']['ci'][1]:+.2f}].",
            "",
        ]
    write_atomic(args.results / "fusion_minilm.md", "\n".join(lines))
    write_atomic(args.results / "fusion_minilm.json", json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
