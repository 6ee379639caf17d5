"""``upcycle evaluate-selection``: how well each estimator picks starting points, leave-one-target-out.

The ground truth is a bench grid in the store: for every target, each candidate's mean test score over
seeds after finetuning from it. Each target is held out in turn: estimators see its training data (as a
user's new dataset) but never its grid results, nor those of tasks sharing its data; the model prior and
the combined ranker read only the other targets. Estimator costs are seconds on the device the estimation runs
on (CPU seconds on the CPU, wall seconds on an accelerator), compared with brute force: the recorded finetune
time (train + eval seconds) of every candidate on that target (one seed).

Choosing the best estimator by this table and quoting its figure is optimistic: the choice saw every target.
:func:`nested_selection` makes the choice inside the leave-one-target-out loop: for each target, the
configuration (estimator, and sample size when several were run) that did best on the *other* targets is
judged on it; that nested figure is the headline, the per-estimator table a diagnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..ranking import Bench
from ..store import Store
from ..tasks import overlapping
from ..training.devices import resolve_device
from .advice import (
    GAIN_INTERVALS,
    GAIN_MODEL,
    RANKING_ONLY,
    STAY,
    SWITCH,
    UNCERTAIN,
    forecast_gains,
    gain_model_estimate,
    judge_advice,
)
from .context import FeatureCache, Sample, SelectionContext
from .estimate import Estimate, estimate, reads_sample
from .estimators import DEFAULT_EXAMPLES
from .metrics import bootstrap_mean_interval, ranking_quality

RANDOM = "random (expected)"
BRUTE_FORCE = "brute force, 1 seed"
REFERENCES = (RANDOM, BRUTE_FORCE)  # reference rows: never a configuration to choose
QUALITY = ["regret_at_1", "regret_at_3", "regret_at_5", "ndcg", "spearman", "kendall"]
LOWER_IS_BETTER = {"regret_at_1", "regret_at_3", "regret_at_5"}  # the others: higher is better
NESTED = ("regret_at_1", "regret_at_3", "regret_at_5", "ndcg")  # what the nested figure reports


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


def base_truth(bench: Bench, store: Store) -> dict[str, float]:
    """``{target: the vanilla base's mean stored score over seeds}``, for the targets where it was measured."""
    scores: dict[str, list[float]] = {}
    for target in bench.targets:
        for seed in bench.seeds:
            result = store.get_result(bench.spec(bench.base, target, seed).key())
            if result is not None:
                scores.setdefault(target.name, []).append(result.score)
    return {target: float(np.mean(values)) for target, values in scores.items()}


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
    examples: int | Sequence[int] = DEFAULT_EXAMPLES,
    seed: int = 0,
    on_progress: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """One row per (estimator, sample size, target): ranking quality, cost seconds (column ``cpu_seconds``, a name
    kept for the committed results; seconds on ``device``'s cost clock), brute-force seconds, fallback used,
    ``examples`` (the target examples the estimator read; None on the reference rows) and ``device`` (what the
    estimation ran on, resolved once from ``$UPCYCLE_DEVICE`` or auto; None on the reference rows).

    ``examples`` may list several sample sizes (``[64, 128, 256]``): every estimator then runs at each, and
    :func:`nested_selection` chooses the sample size inside its loop along with the estimator. Features are
    cached per sample, so each size costs its own forward passes. An estimator that does not read the sample
    (:func:`~.estimate.reads_sample`: the prior, the few-shot proxy, size, random) runs once per target and its
    row is repeated at each size, unless it fell back to one that does.

    Each estimator row also judges the advice ``select`` would give on the target (:func:`~.advice.judge_advice`,
    where the base was measured): ``advice``, the top pick's measured and predicted gain over the base in points
    (``top_gain``, ``predicted_top_gain``), whether its 95% interval held the measured gain (``top_covered``) and
    whether a switch or stay was right (``advice_right``); the gains are the estimator's own where it predicts them,
    else the prior's (:data:`~.advice.GAIN_MODEL`), as in ``select``.

    Also, per target, two reference rows: ``random (expected)``, the exact expectation of a uniformly random
    order, and ``brute force, 1 seed`` (with two or more seeds), what finetuning every candidate once buys
    when judged against the other seeds: the noise floor of the ground truth.
    """
    if not estimators:
        raise ConfigError("No estimators to evaluate.")
    sizes = [examples] if isinstance(examples, int) else list(dict.fromkeys(examples))
    if not sizes or any(n < 2 for n in sizes):
        raise ConfigError(f"--examples must be one or more sample sizes >= 2, not {list(sizes)}.")
    cells = ground_truth(bench, store)
    truth = cells.pivot_table(index="fingerprint", columns="target", values="score", aggfunc="mean")
    seconds = cells.pivot_table(index="fingerprint", columns="target", values="seconds", aggfunc="mean")
    if truth.empty:
        raise ConfigError(f"The bench '{bench.name}' has no stored results: run `upcycle bench` first.")
    cache = FeatureCache(store)
    device = resolve_device()
    base_scores = base_truth(bench, store)
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
        target = target_ref.load()
        common = {"target": target_ref.name, "candidates": len(values), "brute_force_seconds": brute_force}
        expected = ranking_quality(values, np.zeros_like(values))
        rows.append(common | {"estimator": RANDOM, "used": RANDOM, "cpu_seconds": 0.0,
                              "amortized_seconds": 0.0, "examples": None} | expected)
        anchor = single_seed_brute_force(cells, target_ref.name, measured.index)
        if anchor is not None:
            rows.append(common | {"estimator": BRUTE_FORCE, "used": BRUTE_FORCE, "cpu_seconds": brute_force,
                                  "amortized_seconds": 0.0, "examples": None} | anchor)
        gains = ({fingerprint: 100 * (score - base_scores[target_ref.name]) for fingerprint, score in measured.items()}
                 if target_ref.name in base_scores else None)
        prior_forecasts = None
        once: dict[str, Estimate] = {}  # this target's estimates that hold at every sample size
        for n in sizes:
            context = SelectionContext(store=store, target=target, candidates=candidates,  # type: ignore[arg-type]
                                       sample=Sample(n=n, seed=seed, max_length=bench.protocol.max_length),
                                       excluded_tasks=overlapping(target_ref.name), seed=seed, cache=cache)
            if gains is not None and prior_forecasts is None:  # the gain model reads only the grid: once a target
                prior = gain_model_estimate(context)
                prior_forecasts = (forecast_gains(prior, context) or {}) if prior is not None else {}
            for name in estimators:
                result = once.get(name) or estimate(name, context, device=device)
                if not (reads_sample(name) or reads_sample(result.used)):
                    once[name] = result
                predicted = np.array([result.scores[fingerprint] for fingerprint in measured.index], dtype=float)
                row = common | {"estimator": name, "used": result.used, "cpu_seconds": result.seconds,
                                "amortized_seconds": result.amortized_seconds, "examples": n,
                                "device": result.device} | ranking_quality(values, predicted)
                if gains is not None:
                    own = result.used in GAIN_INTERVALS
                    forecasts = forecast_gains(result, context) if own else (prior_forecasts or None)
                    row |= judge_advice({fingerprint: result.scores[fingerprint] for fingerprint in measured.index},
                                        forecasts, gains, own=own)
                rows.append(row)
                if on_progress is not None:
                    on_progress(target_ref.name, name, row)
    if not rows:
        raise ConfigError(f"No target of '{bench.name}' has at least two measured candidates.")
    frame = pd.DataFrame(rows)
    frame["cost_fraction"] = frame["cpu_seconds"] / frame["brute_force_seconds"]
    return frame


def configurations(frame: pd.DataFrame, *, with_examples: bool = False) -> pd.Series:
    """Each row's configuration: its estimator, or ``estimator@examples`` when the frame holds several sample
    sizes (or ``with_examples``, wherever the row records one). Reference rows keep their names."""
    names = frame["estimator"].astype(str)
    if "examples" not in frame.columns:
        return names
    sizes = frame["examples"]
    if not with_examples and sizes.dropna().nunique() <= 1:
        return names
    labelled = names + "@" + sizes.map(lambda n: "" if pd.isna(n) else str(int(n)))
    return labelled.where(sizes.notna() & ~frame["estimator"].isin(REFERENCES), names)


def summarize_selection(frame: pd.DataFrame, *, draws: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per configuration (see :func:`configurations`: the estimator, with its sample size when the frame holds
    several): mean of each quality metric over targets (Regret over targets where it is defined), a 95%
    bootstrap interval (over targets) for Regret@1 and @3, cost as a fraction of brute force (total estimator
    seconds / total brute-force seconds), and the ``device`` the costs were measured on (None for the reference
    rows, or a frame from before costs were device-aware). Not nested: every row saw every target."""
    rng = np.random.default_rng(seed)
    summary = {}
    for name, rows in frame.groupby(configurations(frame), sort=False):
        entry: dict[str, Any] = {metric: float(rows[metric].mean()) for metric in QUALITY}
        for metric in ("regret_at_1", "regret_at_3"):
            entry[f"{metric}_ci"] = list(bootstrap_mean_interval(rows[metric].to_numpy(), rng=rng, draws=draws))
        entry["cpu_seconds_per_target"] = float(rows["cpu_seconds"].mean())
        entry["amortized_seconds"] = float(rows["amortized_seconds"].max())
        entry["cost_fraction"] = float(rows["cpu_seconds"].sum() / rows["brute_force_seconds"].sum())
        entry["fallbacks"] = int((rows["used"] != rows["estimator"]).sum())
        entry["device"] = cost_device(rows)
        if "advice" in rows.columns and rows["advice"].notna().any():
            entry["advice"] = advice_summary(rows)
        summary[str(name)] = entry
    return summary


def advice_summary(rows: pd.DataFrame) -> dict[str, Any]:
    """How the switch-or-stay advice fared on ``rows`` (one configuration's targets): how often each action was
    given, how many switches and stays were right (the top pick's measured gain > 0, resp. <= 0), the share of
    measured top-pick gains inside their 95% predicted interval, the mean measured gain where it said switch, and
    ``gains_from``: what predicted the gains (the estimator that ran, where it predicts gains, else the gain model;
    a fallback shows as what it fell back to)."""
    actions = rows["advice"].dropna()
    ran = rows.loc[rows["advice"].notna(), "used"]
    sources = sorted({used if used in GAIN_INTERVALS else GAIN_MODEL for used in ran})
    decided = rows["advice_right"].dropna().astype(bool)
    covered = rows["top_covered"].dropna().astype(bool)
    switched = rows.loc[rows["advice"] == SWITCH, "top_gain"]
    return {"targets": int(len(actions)), **{action: int((actions == action).sum())
                                             for action in (SWITCH, STAY, UNCERTAIN, RANKING_ONLY)},
            "right": int(decided.sum()), "decided": int(len(decided)),
            "top_interval_coverage": float(covered.mean()) if len(covered) else None, "intervals": int(len(covered)),
            "mean_gain_when_switching": float(switched.mean()) if len(switched) else None,
            "gains_from": ", ".join(sources)}


def cost_device(frame: pd.DataFrame) -> str | None:
    """The device the estimator costs of ``frame`` were measured on (several joined by ``, ``); None when no row
    says (the reference rows, or a frame from before costs were device-aware)."""
    if "device" not in frame.columns:
        return None
    devices = sorted(frame["device"].dropna().unique())
    return ", ".join(map(str, devices)) or None


@dataclass(frozen=True)
class NestedSelection:
    """The nested leave-one-target-out figure: for each target, the configuration chosen on the other targets,
    judged on it.

    ``per_target`` holds one row per target: ``target``, ``chosen`` (the configuration, ``estimator@examples``
    where the sample size is known), ``inner`` (its mean ``metric`` over the other targets, what won it the fold)
    and the chosen configuration's own row on the target (``estimator``, ``examples``, the quality metrics,
    ``cpu_seconds``, ``brute_force_seconds``). ``in_sample`` is the configuration the same rule picks on every
    target at once and its (not nested, optimistic) means: what the diagnostic table would have quoted.
    """

    metric: str
    per_target: pd.DataFrame
    candidates: tuple[str, ...]
    in_sample: dict[str, Any] = field(default_factory=dict)
    draws: int = 2000
    seed: int = 0

    @property
    def chosen(self) -> dict[str, str]:
        """``{target: configuration chosen without it}``."""
        return dict(zip(self.per_target["target"], self.per_target["chosen"], strict=True))

    def summary(self) -> dict[str, Any]:
        """Means over targets of Regret@1/3/5 (where defined) and NDCG, each with a 95% bootstrap interval over
        targets; cost as a fraction of brute force; which configuration each fold chose and how often each was."""
        rng = np.random.default_rng(self.seed)
        rows = self.per_target
        summary: dict[str, Any] = {"selection_metric": self.metric}
        for metric in NESTED:
            summary[metric] = float(rows[metric].mean())
            summary[f"{metric}_ci"] = list(bootstrap_mean_interval(rows[metric].to_numpy(), rng=rng, draws=self.draws))
        summary["cost_fraction"] = float(rows["cpu_seconds"].sum() / rows["brute_force_seconds"].sum())
        summary["chosen"] = self.chosen
        counts = rows["chosen"].value_counts()
        summary["chosen_counts"] = {str(name): int(counts[name])
                                    for name in sorted(counts.index, key=lambda name: (-counts[name], name))}
        summary["candidates"] = list(self.candidates)
        summary["in_sample"] = self.in_sample
        return summary


def nested_selection(
    frame: pd.DataFrame, *, metric: str = "regret_at_3", pool: Iterable[str] | None = None, draws: int = 2000,
    seed: int = 0,
) -> NestedSelection:
    """Choose the configuration inside the leave-one-target-out loop, and judge each choice on its held-out target.

    ``frame`` is :func:`evaluate_selection`'s (or several concatenated: one per sample size). The configurations
    are the estimators in it, paired with their sample size (``examples``) where the frame records one; the
    reference rows (``random (expected)``, ``brute force, 1 seed``) never compete. ``pool`` keeps only the
    configurations named in it (by estimator or by ``estimator@examples``). For each target t the configuration
    with the best mean ``metric`` over the *other* targets (lower Regret, higher NDCG/Spearman/Kendall; Regret
    where defined) wins, ties broken by lower mean cost (``cpu_seconds``) there, then by name; its row on t is
    the fold's result. Pure: no model is run.
    """
    if metric not in QUALITY:
        raise ConfigError(f"The nested selection metric must be one of {', '.join(QUALITY)}, not '{metric}'.")
    if "examples" in frame.columns and frame["examples"].notna().any():
        configs = configurations(frame, with_examples=True)
    else:
        configs = frame["estimator"].astype(str)
    rows = frame.assign(configuration=configs)
    rows = rows[~rows["estimator"].isin(REFERENCES)]
    if pool is not None:
        wanted = set(pool)
        known = set(rows["configuration"]) | set(rows["estimator"])
        unknown = sorted(wanted - known)
        if unknown:
            raise ConfigError(f"Not in the evaluation: {', '.join(unknown)}; it holds {', '.join(sorted(known))}.")
        rows = rows[rows["configuration"].isin(wanted) | rows["estimator"].isin(wanted)]
    targets = sorted(rows["target"].unique())
    if rows.empty or len(targets) < 2:
        raise ConfigError("A nested selection needs at least one estimator evaluated on at least two targets.")
    candidates = tuple(sorted(rows["configuration"].unique()))
    table, cost = (rows.pivot_table(index="configuration", columns="target", values=values, aggfunc="mean",
                                    dropna=False).reindex(index=list(candidates), columns=targets)
                   for values in (metric, "cpu_seconds"))  # a target where Regret is undefined stays, as NaN

    def best(on: list[str]) -> tuple[str, float]:
        """The winning configuration on targets ``on``, and its mean ``metric`` there."""
        means = table[on].mean(axis=1)  # NaN (undefined Regret) left out; all-NaN stays NaN
        costs = cost[on].mean(axis=1).fillna(np.inf)
        sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

        def rank(name: str) -> tuple[float, float, str]:
            value = means[name]
            return (np.inf if np.isnan(value) else round(sign * float(value), 9), float(costs[name]), name)

        winner = min(candidates, key=rank)
        return winner, float(means[winner])

    picked = []
    by_configuration = rows.set_index(["configuration", "target"]).sort_index()
    for target in targets:
        winner, inner = best([t for t in targets if t != target])
        record: dict[str, Any] = {"target": target, "chosen": winner, "inner": inner}
        if (winner, target) in by_configuration.index:
            own = by_configuration.loc[(winner, target)]
            own = own.iloc[0] if isinstance(own, pd.DataFrame) else own
            record |= {"estimator": own["estimator"], "examples": own.get("examples")}
            record |= {key: own[key] for key in (*QUALITY, "cpu_seconds", "brute_force_seconds")}
        else:  # the winner was not run on this target: the fold counts as unanswered
            record |= {"estimator": None, "examples": None} | dict.fromkeys(QUALITY, np.nan)
            record |= {"cpu_seconds": np.nan, "brute_force_seconds": np.nan}
        picked.append(record)
    overall, _ = best(targets)
    in_sample = {"configuration": overall} | {
        name: float(rows.loc[rows["configuration"] == overall, name].mean()) for name in NESTED}
    return NestedSelection(metric, pd.DataFrame(picked), candidates, in_sample, draws, seed)
