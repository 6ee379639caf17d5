"""The published model-recycling table as a second, real ground truth for the grid-only estimators.

On the screened roberta-base table (``../shared/external/model-recycling``, see
:mod:`upcycle.ranking.published`), the candidates with all 36 scores, leave one target out: the prior ranks the
candidates by their mean gain over the other 35 targets; random order is the exact expectation. Each is judged
on the held-out target's published scores (Regret@1/3/5, NDCG: ``upcycle.selection.metrics``), and the means
over the 36 targets get 95% bootstrap intervals (targets resampled; the prior - random difference is paired).
The same run without the profile screen (the column-shifted rows kept as if sound) shows what it is for.

It also measures how often the prior's 95% interval of a candidate's gain covers the gain published on the held-out
target, for every (candidate, target) pair and for each target's top pick: the Student-t prediction interval that
``select`` prints (``upcycle.selection.metrics.prediction_interval``), and the percentile bootstrap interval of the
mean gain that it printed before (``bootstrap_mean_interval``), which is the interval of the average, not of one
new target's gain.

    .venv/bin/python benchmarks/published_prior.py        # writes benchmarks/results/published_prior.json

CPU only, a few seconds. The issue (17, item 5) quotes prior Regret@1 3.50 vs random 5.72, Regret@3 2.47 vs 3.94.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from upcycle.ranking.loto import bootstrap_mean, loto_prior, loto_quality
from upcycle.ranking.published import import_published
from upcycle.report import write_atomic
from upcycle.selection.metrics import bootstrap_mean_interval, prediction_interval

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT.parent / "shared" / "external" / "model-recycling"
OUT = ROOT / "benchmarks" / "results" / "published_prior.json"
METRICS = ("regret_at_1", "regret_at_3", "regret_at_5", "ndcg")
ISSUE = {"prior": {"regret_at_1": 3.50, "regret_at_3": 2.47}, "random": {"regret_at_1": 5.72, "regret_at_3": 3.94}}


def evaluate(scores: pd.DataFrame, gains: pd.DataFrame, draws: int) -> dict:
    """LOTO prior and random on one table: per-target rows and means with intervals."""
    prior = loto_quality(scores, loto_prior(gains))
    chance = loto_quality(scores, None)
    summary: dict = {"candidates": int(len(gains)), "targets": int(gains.shape[1])}
    for name, frame in (("prior", prior), ("random", chance)):
        summary[name] = {}
        for metric in METRICS:
            mean, low, high = bootstrap_mean(frame[metric].to_numpy(), draws=draws)
            summary[name][metric] = {"mean": round(mean, 3), "ci95": [round(low, 3), round(high, 3)]}
    summary["prior_minus_random"] = {}
    for metric in METRICS:
        mean, low, high = bootstrap_mean((prior[metric] - chance[metric]).to_numpy(), draws=draws)
        summary["prior_minus_random"][metric] = {"mean": round(mean, 3), "ci95": [round(low, 3), round(high, 3)]}
    summary["per_target"] = {target: {"prior": {m: round(float(prior.loc[target, m]), 3) for m in METRICS},
                                      "random": {m: round(float(chance.loc[target, m]), 3) for m in METRICS}}
                             for target in prior.index}
    return summary


def interval_coverage(gains: pd.DataFrame) -> dict:
    """Leave one target out: the share of held-out gains inside each kind of 95% interval computed from the
    candidate's gains on the other targets, over all (candidate, target) pairs and over each target's top pick (the
    highest mean gain on the other targets), with the intervals' mean width in points."""
    rng = np.random.default_rng(0)
    kinds = {"prediction interval (printed now)": prediction_interval,
             "interval of the mean gain (printed before)": lambda values: bootstrap_mean_interval(values, rng=rng)}
    hits: dict[str, dict[str, list[bool]]] = {kind: {"all": [], "top_pick": []} for kind in kinds}
    widths: dict[str, list[float]] = {kind: [] for kind in kinds}
    for target in gains.columns:
        others = gains.drop(columns=target)
        top = others.mean(axis=1).idxmax()
        for candidate, row in others.iterrows():
            held_out = gains.at[candidate, target]
            for kind, interval in kinds.items():
                low, high = interval(row.to_numpy(float))
                hits[kind]["all"].append(low <= held_out <= high)
                widths[kind].append(high - low)
                if candidate == top:
                    hits[kind]["top_pick"].append(low <= held_out <= high)
    return {kind: {"coverage": round(float(np.mean(hits[kind]["all"])), 4),
                   "top_pick_coverage": round(float(np.mean(hits[kind]["top_pick"])), 4),
                   "mean_width_points": round(float(np.mean(widths[kind])), 2),
                   "pairs": len(hits[kind]["all"]), "top_picks": len(hits[kind]["top_pick"])} for kind in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=PUBLISHED / "roberta-base_table.csv")
    parser.add_argument("--base-runs", type=Path, default=PUBLISHED / "models_results_roberta_base_pretrain.csv")
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    document, screening = import_published(args.table, args.base_runs)
    [gain_set] = document.sets
    gains = gain_set.frame()
    full = gains[gains.notna().all(axis=1)]
    base = pd.Series(gain_set.base.scores)[full.columns]
    clean = evaluate(full + base, full, args.draws)  # measured score = base mean + gain (x100)

    # without the profile screen: the rows whose scores correlate < 0.9 with the base's kept as if they were sound
    [unprofiled] = import_published(args.table, args.base_runs, min_correlation=-np.inf)[0].sets
    raw = unprofiled.frame()
    raw = raw[raw.notna().all(axis=1)]
    unscreened = evaluate(raw + base, raw, args.draws)
    unscreened.pop("per_target")

    result = {
        "command": "python benchmarks/published_prior.py",
        "table": os.path.relpath(args.table, ROOT),  # relative to the repository root: no machine's path
        "source": document.source,
        "screening": {"rows": len(screening.scores) + len(screening.excluded),
                      "excluded": screening.counts, "full_candidate_rows": screening.full_rows,
                      "full_rows_profile_below": screening.full_low_profile,
                      "min_correlation": screening.min_correlation, "kept_full": int(len(full))},
        "protocol": "leave one target out over the 36 targets; truth = published score (base mean + gain); "
                    "regret = (best - best of the top k) / best x 100; 95% CI: bootstrap over targets",
        "issue_figures": ISSUE,
        "screened": clean,
        "interval_coverage": interval_coverage(full),
        "without_profile_screen": unscreened,
        "draws": args.draws,
        "python": platform.python_version(),
    }
    write_atomic(args.out, json.dumps(result, indent=1) + "\n")
    for label, summary in (("screened", clean), ("without the profile screen", unscreened)):
        print(f"{label}: {summary['candidates']} candidates x {summary['targets']} targets")
        for name in ("prior", "random", "prior_minus_random"):
            cells = [f"{m} {summary[name][m]['mean']:.2f} [{summary[name][m]['ci95'][0]:.2f}, "
                     f"{summary[name][m]['ci95'][1]:.2f}]" for m in METRICS]
            print(f"  {name:>18}: " + "; ".join(cells))
    for kind, entry in result["interval_coverage"].items():
        print(f"{kind}: covers {entry['coverage']:.1%} of held-out gains ({entry['top_pick_coverage']:.1%} of the "
              f"top picks'), mean width {entry['mean_width_points']:.1f} points")
    print(f"wrote {args.out}")
    assert np.isfinite(clean["prior"]["regret_at_1"]["mean"])


if __name__ == "__main__":
    main()
