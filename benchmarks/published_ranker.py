"""The learned ranker's model against the prior on the published model-recycling table (many targets, real data).

On the screened roberta-base table (``../shared/external/model-recycling``: the 317 clean candidates with all 36
scores, as in ``benchmarks/published_prior.py``), leave one target out. The prior ranks the candidates by their
mean gain over the other 35 targets. The ranker is the estimator's model
(:func:`upcycle.selection.ranker_model.fit_ranker`, the same code ``--estimator ranker`` runs) on features that the
grid alone gives, so no checkpoint is loaded: for a (candidate, target) pair, computed from the candidate's gains
on the *other* targets (the held-out one never among them):

* ``prior``: mean gain (also kept raw: the level), ``median``: median gain,
* ``std``: standard deviation of its gains, ``win_rate``: share of the targets where it beats the base.

It is trained on the 35 remaining targets (each training target's features computed without that target too) and
ranks the held-out target's candidates by predicted gain. Both are judged on the held-out target's published scores
(Regret@1/3/5, NDCG: ``upcycle.selection.metrics``); 95% bootstrap intervals over the 36 targets, the ranker -
prior difference paired by target. Also: how often the ranker's 95% interval covers a held-out gain (every
candidate's, and the top pick's), the top pick's predicted and measured gain (the ranker's and the prior's), and
the chosen penalties and weights.

    .venv/bin/python benchmarks/published_ranker.py      # writes benchmarks/results/published_ranker.json

CPU only, a few minutes (36 x 35-fold cross-validated ridge fits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from upcycle.ranking.loto import bootstrap_mean, loto_prior, loto_quality
from upcycle.ranking.published import import_published
from upcycle.report import write_atomic
from upcycle.selection.ranker_model import fit_ranker

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT.parent / "shared" / "external" / "model-recycling"
OUT = ROOT / "benchmarks" / "results" / "published_ranker.json"
METRICS = ("regret_at_1", "regret_at_3", "regret_at_5", "ndcg")
FEATURES = ("prior", "median", "std", "win_rate")


def grid_features(gains: pd.DataFrame) -> pd.DataFrame:
    """Per candidate (rows of ``gains``, candidates x targets in points), from all of its columns: FEATURES."""
    return pd.DataFrame({"prior": gains.mean(axis=1), "median": gains.median(axis=1), "std": gains.std(axis=1),
                         "win_rate": (gains > 0).sum(axis=1) / gains.notna().sum(axis=1)}, index=gains.index)


def training_table(gains: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Rows (candidate, training target) for every column of ``gains``: features from the other columns, the gain
    on that column as the label, the column as the group."""
    frames, labels, groups = [], [], []
    for target in gains.columns:
        features = grid_features(gains.drop(columns=target))
        frames.append(features.set_axis([(c, target) for c in features.index]))
        labels.append(gains[target].to_numpy(float))
        groups.extend([target] * len(features))
    table = pd.concat(frames)
    return table, pd.Series(np.concatenate(labels), index=table.index), np.asarray(groups)


def ranker_loto(gains: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[dict]]:
    """Leave one target out: predicted gains, interval bounds (candidates x targets) and each fold's model."""
    predicted, low, high, folds = {}, {}, {}, []
    for held_out in gains.columns:
        others = gains.drop(columns=held_out)
        features, labels, groups = training_table(others)
        model = fit_ranker(features, labels, groups)
        forecast = model.predict(grid_features(others))
        predicted[held_out], low[held_out], high[held_out] = forecast["gain"], forecast["low"], forecast["high"]
        folds.append({"target": held_out, "alpha": model.alpha, "cv_rmse": round(model.cv_rmse, 3),
                      "interval": [round(model.low, 3), round(model.high, 3)],
                      "weights": {k: round(v, 4) for k, v in model.coefficients().items()}})
    frame = lambda values: pd.DataFrame(values, index=gains.index)[gains.columns]  # noqa: E731
    return frame(predicted), frame(low), frame(high), folds


def summarize(frame: pd.DataFrame, draws: int) -> dict:
    out = {}
    for metric in METRICS:
        mean, low, high = bootstrap_mean(frame[metric].to_numpy(), draws=draws)
        out[metric] = {"mean": round(mean, 3), "ci95": [round(low, 3), round(high, 3)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=PUBLISHED / "roberta-base_table.csv")
    parser.add_argument("--base-runs", type=Path, default=PUBLISHED / "models_results_roberta_base_pretrain.csv")
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    started = time.perf_counter()
    document, _ = import_published(args.table, args.base_runs)
    [gain_set] = document.sets
    gains = gain_set.frame()
    full = gains[gains.notna().all(axis=1)]
    scores = full + pd.Series(gain_set.base.scores)[full.columns]  # measured score = base mean + gain (x100)

    prior = loto_quality(scores, loto_prior(full))
    chance = loto_quality(scores, None)
    predicted, low, high, folds = ranker_loto(full)
    ranker = loto_quality(scores, predicted)
    covered = ((full >= low) & (full <= high)).to_numpy()
    top = predicted.idxmax()  # each held-out target's top pick: predicted vs measured gain
    top_gain = pd.Series({t: full.loc[top[t], t] for t in full.columns})
    top_pred = pd.Series({t: predicted.loc[top[t], t] for t in full.columns})
    top_covered = pd.Series({t: low.loc[top[t], t] <= full.loc[top[t], t] <= high.loc[top[t], t] for t in full.columns})
    prior_predicted = loto_prior(full)
    prior_top = prior_predicted.idxmax()

    summary = {"candidates": int(len(full)), "targets": int(full.shape[1]),
               "prior": summarize(prior, args.draws), "ranker": summarize(ranker, args.draws),
               "random": summarize(chance, args.draws),
               "ranker_minus_prior": summarize(ranker - prior, args.draws)}
    same_top = int(sum(top[t] == prior_top[t] for t in full.columns))
    result = {
        "command": "python benchmarks/published_ranker.py",
        "table": os.path.relpath(args.table, ROOT),
        "source": document.source,
        "protocol": "leave one target out over the 36 targets; ranker = upcycle.selection.ranker_model.fit_ranker "
                    f"on grid-only features {list(FEATURES)} of each (candidate, target), computed from the other "
                    "targets, trained on the 35 remaining targets (alpha chosen leave-one-target-out among them); "
                    "truth = published score; regret = (best - best of the top k) / best x 100; 95% CI: bootstrap "
                    "over targets (ranker - prior paired)",
        "screened": summary,
        "same_top_pick_as_prior": same_top,
        "interval_coverage": round(float(covered.mean()), 4),
        "top_pick_gain": {"predicted_mean": round(float(top_pred.mean()), 3),
                          "measured_mean": round(float(top_gain.mean()), 3),
                          "interval_coverage": round(float(top_covered.mean()), 4),
                          "prior_predicted_mean": round(float(np.mean([prior_predicted.loc[prior_top[t], t]
                                                                       for t in full.columns])), 3),
                          "prior_measured_mean": round(float(np.mean([full.loc[prior_top[t], t]
                                                                      for t in full.columns])), 3)},
        "alphas_chosen": pd.Series([f["alpha"] for f in folds]).value_counts().sort_index().to_dict(),
        "mean_weights": pd.DataFrame([f["weights"] for f in folds]).mean().round(4).to_dict(),
        "folds": folds,
        "per_target": {t: {"prior": {m: round(float(prior.loc[t, m]), 3) for m in METRICS},
                           "ranker": {m: round(float(ranker.loc[t, m]), 3) for m in METRICS}} for t in full.columns},
        "draws": args.draws,
        "seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
    }
    result["alphas_chosen"] = {str(k): int(v) for k, v in result["alphas_chosen"].items()}
    write_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(f"{summary['candidates']} candidates x {summary['targets']} targets")
    for name in ("prior", "ranker", "random", "ranker_minus_prior"):
        cells = [f"{m} {summary[name][m]['mean']:.2f} [{summary[name][m]['ci95'][0]:.2f}, "
                 f"{summary[name][m]['ci95'][1]:.2f}]" for m in METRICS]
        print(f"  {name:>18}: " + "; ".join(cells))
    print(f"  same top pick as the prior on {same_top} of {summary['targets']} targets; interval coverage "
          f"{result['interval_coverage']:.3f} (top picks: {result['top_pick_gain']['interval_coverage']:.3f}); top "
          f"pick's gain predicted {result['top_pick_gain']['predicted_mean']:+.2f}, measured "
          f"{result['top_pick_gain']['measured_mean']:+.2f} (prior's: "
          f"{result['top_pick_gain']['prior_predicted_mean']:+.2f}"
          f", {result['top_pick_gain']['prior_measured_mean']:+.2f}); alphas {result['alphas_chosen']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
