"""How far a grid cell moves when its expert is rebuilt on another machine: the case for ``--adopt-rebuilds``.

The converged grid (``benchmarks/recycling_minilm.sh``) outlives its machines as a committed store export, but a
fresh machine rebuilds the 12 source experts, and on another CPU model the same recipe (base, data, seed,
protocol) rounds differently: other fingerprints. ``upcycle store merge --adopt-rebuilds`` counts the committed
cells as the rebuilds' cells. This measures what that assumes. Some committed cells were run again on the rebuilt
experts (``upcycle bench`` on those targets before the merge; the rerun is kept and exported, the first run is in
the export at ``--before``), and each rerun is paired with its first run:

* ``rebuild drift``: |score after - score before| over the experts' grid cells (the expert rebuilt, then finetuned);
* ``retrain drift``: the same where the weights going in are identical on both machines (finetuning alone): the
  vanilla base's grid cells and the 12 experts' own trainings from it;
* the anchor, seed-to-seed spread: |seed 0 - seed 1| of the same (candidate, target) cells in the committed quick
  grid (``recycling_minilm.csv``, 2 seeds everywhere), and the expected |seed 0 - seed 1| of the vanilla base under
  the converged protocol's family (2/sqrt(pi) x the pooled seed SD of ``base_convergence.json`` on those targets);
* the ratio of rebuild drift to the quick anchor, with a 95% bootstrap interval (pairs resampled), and each
  expert's own test metric on both builds.

    .venv/bin/python benchmarks/rebuild_drift.py --before 50e7aa4

writes ``benchmarks/results/rebuild_drift.json`` (``--before``: the git revision whose export holds the first runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from upcycle.report import write_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXPORT = "benchmarks/results/recycling_minilm_converged.results.jsonl"
BASE = "minilm"


def read_export(lines: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, experts) of a store export: one row per finetune result (candidate, target, seed, protocol, score,
    fingerprint, created_at, measured_on) and per zoo entry with provenance (name, fingerprint, metrics)."""
    cells, experts = [], []
    for line in lines[1:]:
        entry = json.loads(line)
        row = entry["row"]
        if entry["table"] == "finetune_results":
            result = json.loads(row["result"])
            cells.append({"candidate": result["base_name"], "target": row["task_name"], "seed": row["seed"],
                          "protocol": row["protocol"], "score": row["score"], "fingerprint": row["base_fingerprint"],
                          "created_at": row["created_at"], "measured_on": result.get("measured_on")})
        elif entry["table"] == "checkpoints" and row["provenance"]:
            experts.append({"name": row["name"], "fingerprint": row["fingerprint"],
                            "metrics": json.loads(row["provenance"]).get("metrics", {})})
    return pd.DataFrame(cells), pd.DataFrame(experts)


def rerun_pairs(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The cells run again after ``before``: same candidate, target, seed and protocol, not adopted, run later."""
    keys = ["candidate", "target", "seed", "protocol"]
    pairs = before.merge(after[after["measured_on"].isna()], on=keys, suffixes=("_before", "_after"))
    pairs = pairs[pairs["created_at_after"] != pairs["created_at_before"]]
    return pairs.assign(drift=(pairs["score_after"] - pairs["score_before"]).abs(),
                        rebuilt=pairs["fingerprint_after"] != pairs["fingerprint_before"])


def seed_spread(cells: pd.DataFrame) -> np.ndarray:
    """|seed 0 - seed 1| of every (candidate, target) cell measured under both seeds."""
    wide = cells.pivot_table(index=["candidate", "target"], columns="seed", values="score")
    return (wide[0] - wide[1]).abs().dropna().to_numpy() if {0, 1} <= set(wide.columns) else np.array([])


def ratio_interval(drift: np.ndarray, spread: np.ndarray, draws: int = 10_000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of mean(drift) / mean(spread), both resampled with replacement."""
    rng = np.random.default_rng(seed)
    d = drift[rng.integers(0, len(drift), (draws, len(drift)))].mean(axis=1)
    s = spread[rng.integers(0, len(spread), (draws, len(spread)))].mean(axis=1)
    ratios = d / np.where(s > 0, s, np.nan)
    return [float(np.nanpercentile(ratios, 2.5)), float(np.nanpercentile(ratios, 97.5))]


def summary(values: np.ndarray) -> dict[str, Any]:
    return {"n": int(len(values)), "mean_abs": float(values.mean()) if len(values) else None,
            "max_abs": float(values.max()) if len(values) else None, "identical": int((values == 0).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision whose export holds the first runs")
    parser.add_argument("--after", type=Path, default=ROOT / EXPORT, help="the export holding the reruns")
    parser.add_argument("--protocol", default="converged+", help="the grid's protocol (others: expert trainings)")
    parser.add_argument("--out", type=Path, default=RESULTS / "rebuild_drift.json")
    args = parser.parse_args()
    shown = subprocess.run(["git", "show", f"{args.before}:{EXPORT}"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout
    before, experts_before = read_export(shown.splitlines())
    after, experts_after = read_export(args.after.read_text().splitlines())
    pairs = rerun_pairs(before, after)
    grid = pairs["protocol"] == args.protocol
    rebuilt = pairs[grid & pairs["rebuilt"]]
    retrained = pairs[~pairs["rebuilt"]]
    targets = sorted(pairs.loc[grid, "target"].unique())
    quick = pd.read_csv(RESULTS / "recycling_minilm.csv")
    anchor = seed_spread(quick[quick["target"].isin(targets)])
    pooled_sd = json.loads((RESULTS / "base_convergence.json").read_text())["pooled_seed_sd"]
    converged_spread = float(np.mean([2 / np.sqrt(np.pi) * pooled_sd[target] for target in targets]))
    builds = experts_before.merge(experts_after, on="name", suffixes=("_before", "_after"))
    report = {
        "before": args.before, "targets": targets, "protocol": args.protocol,
        "rebuild_drift": summary(rebuilt["drift"].to_numpy()),
        "retrain_drift": summary(retrained["drift"].to_numpy()),
        "seed_spread_quick_same_targets": summary(anchor),
        "seed_spread_converged_base_expected_abs": converged_spread,
        "rebuild_drift_over_seed_spread": {
            "ratio": float(rebuilt["drift"].mean() / anchor.mean()) if len(rebuilt) and len(anchor) else None,
            "interval_95": ratio_interval(rebuilt["drift"].to_numpy(), anchor) if len(rebuilt) else None},
        "experts": [{"name": b.name, "same_weights": b.fingerprint_before == b.fingerprint_after,
                     "metrics_before": b.metrics_before, "metrics_after": b.metrics_after}
                    for b in builds.itertuples()],
        "pairs": [{"candidate": p.candidate, "target": p.target, "seed": int(p.seed), "before": p.score_before,
                   "after": p.score_after, "protocol": p.protocol, "rebuilt": bool(p.rebuilt)}
                  for p in pairs.itertuples()],
        "command": f".venv/bin/python benchmarks/rebuild_drift.py --before {args.before}",
    }
    write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("pairs", "experts")}, indent=2))


if __name__ == "__main__":
    main()
