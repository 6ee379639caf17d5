"""``upcycle evaluate-selection``: how well each estimator picks starting points, leave-one-target-out.

The ground truth is a bench grid in the store: for every target, each candidate's mean test score over
seeds after finetuning from it. Each target is held out in turn: estimators see its training data (as a
user's new dataset) but never its grid results, nor those of tasks sharing its data; the model prior and
the combined ranker read only the other targets. Estimator costs are seconds on the device the estimation runs
on (CPU seconds on the CPU, wall seconds on an accelerator), compared with brute force: the recorded finetune
time (train + eval seconds) of every candidate on that target (one seed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..ranking import Bench
from ..store import Store
from ..tasks import overlapping
from ..training.devices import resolve_device
from .context import FeatureCache, Sample, SelectionContext
from .estimate import estimate
from .estimators import DEFAULT_EXAMPLES
from .metrics import ranking_quality

RANDOM = "random (expected)"
BRUTE_FORCE = "brute force, 1 seed"
QUALITY = ["regret_at_1", "regret_at_3", "regret_at_5", "ndcg", "spearman", "kendall"]


def ground_truth(bench: Bench, store: Store) -> pd.DataFrame:
    """Stored candidate cells as tidy rows ``(fingerprint, target, seed, score, seconds)``, seconds = the
    finetune's train + eval time. The base is not a candidate."""
    rows = []
    for candidate, target, seed in bench.cells():
        if candidate.checkpoint.fingerprint == bench.base.checkpoint.fingerprint:
            continue
        result = store.get_result(bench.spec(candidate, target, seed).key())
        if result is not None:
            rows.append((candidate.checkpoint.fingerprint, target.name, seed, result.score,
                         result.train_seconds + result.eval_seconds))
    return pd.DataFrame(rows, columns=["fingerprint", "target", "seed", "score", "seconds"])


def single_seed_brute_force(cells: pd.DataFrame, target: str, order: pd.Index) -> dict[str, float] | None:
    """The anchor: finetune every candidate once (one seed) and pick by that, judged against the mean of the
    other seeds; averaged over which seed was used. None with fewer than two seeds."""
    table = cells[cells["target"] == target].pivot_table(index="fingerprint", columns="seed", values="score")
    table = table.reindex(order).dropna(axis=1)
    if table.shape[1] < 2:
        return None
    runs = [ranking_quality(table.drop(columns=seed).mean(axis=1).to_numpy(), table[seed].to_numpy())
            for seed in table.columns]
    return pd.DataFrame(runs).mean().to_dict()


def evaluate_selection(
    store: Store,
    bench: Bench,
    estimators: list[str],
    *,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    on_progress: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """One row per (estimator, target): ranking quality, cost seconds (column ``cpu_seconds``, a name kept for
    the committed results; seconds on ``device``'s cost clock), brute-force seconds, fallback used, and ``device``
    (what the estimation ran on, resolved once from ``$UPCYCLE_DEVICE`` or auto; None on the reference rows).

    Also, per target, two reference rows: ``random (expected)``, the exact expectation of a uniformly random
    order, and ``brute force, 1 seed`` (with two or more seeds), what finetuning every candidate once buys
    when judged against the other seeds: the noise floor of the ground truth.
    """
    if not estimators:
        raise ConfigError("No estimators to evaluate.")
    cells = ground_truth(bench, store)
    truth = cells.pivot_table(index="fingerprint", columns="target", values="score", aggfunc="mean")
    seconds = cells.pivot_table(index="fingerprint", columns="target", values="seconds", aggfunc="mean")
    if truth.empty:
        raise ConfigError(f"The bench '{bench.name}' has no stored results: run `upcycle bench` first.")
    cache = FeatureCache(store)
    device = resolve_device()
    rows = []
    for target_ref in bench.targets:
        if target_ref.name not in truth.columns:
            continue
        measured = truth[target_ref.name].dropna()
        candidates = tuple(store.get_checkpoint(fingerprint) for fingerprint in measured.index)
        if any(c is None for c in candidates) or len(candidates) < 2:
            continue
        values = measured.to_numpy(float)
        brute_force = float(seconds[target_ref.name].loc[measured.index].sum())
        context = SelectionContext(store=store, target=target_ref.load(), candidates=candidates,  # type: ignore[arg-type]
                                   sample=Sample(n=examples, seed=seed, max_length=bench.protocol.max_length),
                                   excluded_tasks=overlapping(target_ref.name), seed=seed, cache=cache)
        common = {"target": target_ref.name, "candidates": len(values), "brute_force_seconds": brute_force}
        expected = ranking_quality(values, np.zeros_like(values))
        rows.append(common | {"estimator": RANDOM, "used": RANDOM, "cpu_seconds": 0.0,
                              "amortized_seconds": 0.0} | expected)
        anchor = single_seed_brute_force(cells, target_ref.name, measured.index)
        if anchor is not None:
            rows.append(common | {"estimator": BRUTE_FORCE, "used": BRUTE_FORCE, "cpu_seconds": brute_force,
                                  "amortized_seconds": 0.0} | anchor)
        for name in estimators:
            result = estimate(name, context, device=device)
            predicted = np.array([result.scores[fingerprint] for fingerprint in measured.index], dtype=float)
            row = common | {"estimator": name, "used": result.used, "cpu_seconds": result.seconds,
                            "amortized_seconds": result.amortized_seconds,
                            "device": result.device} | ranking_quality(values, predicted)
            rows.append(row)
            if on_progress is not None:
                on_progress(target_ref.name, name, row)
    if not rows:
        raise ConfigError(f"No target of '{bench.name}' has at least two measured candidates.")
    frame = pd.DataFrame(rows)
    frame["cost_fraction"] = frame["cpu_seconds"] / frame["brute_force_seconds"]
    return frame


def summarize_selection(frame: pd.DataFrame, *, draws: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per estimator: mean of each quality metric over targets (Regret over targets where it is defined),
    a 95% bootstrap interval (over targets) for Regret@1 and @3, cost as a fraction of brute force
    (total estimator seconds / total brute-force seconds), and the ``device`` the costs were measured on (None
    for the reference rows, or a frame from before costs were device-aware)."""
    rng = np.random.default_rng(seed)
    summary = {}
    for name, rows in frame.groupby("estimator", sort=False):
        entry: dict[str, Any] = {metric: float(rows[metric].mean()) for metric in QUALITY}
        for metric in ("regret_at_1", "regret_at_3"):
            values = rows[metric].dropna().to_numpy()
            means = rng.choice(values, size=(draws, len(values))).mean(1) if len(values) else np.array([np.nan])
            entry[f"{metric}_ci"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
        entry["cpu_seconds_per_target"] = float(rows["cpu_seconds"].mean())
        entry["amortized_seconds"] = float(rows["amortized_seconds"].max())
        entry["cost_fraction"] = float(rows["cpu_seconds"].sum() / rows["brute_force_seconds"].sum())
        entry["fallbacks"] = int((rows["used"] != name).sum())
        entry["device"] = cost_device(rows)
        summary[str(name)] = entry
    return summary


def cost_device(frame: pd.DataFrame) -> str | None:
    """The device the estimator costs of ``frame`` were measured on (several joined by ``, ``); None when no row
    says (the reference rows, or a frame from before costs were device-aware)."""
    if "device" not in frame.columns:
        return None
    devices = sorted(frame["device"].dropna().unique())
    return ", ".join(map(str, devices)) or None
