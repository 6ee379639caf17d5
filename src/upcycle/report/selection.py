"""Selection-evaluation renderers: the committed JSON and the Markdown report. Pure functions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ..ranking import Bench
from ..selection.advice import GAIN_INTERVALS
from ..selection.evaluation import BRUTE_FORCE, NESTED, RANDOM, NestedSelection, configurations, cost_device
from .markdown import markdown_cell, markdown_code


def results_json(frame: pd.DataFrame, summary: dict[str, dict[str, Any]], default: str,
                 nested: NestedSelection | None = None) -> str:
    """The committed result file: ``{"default", "candidates", "targets", "device", "estimators": {NAME: {...}},
    "per_target", "nested"}``; ``nested`` (the headline) only when given, see :func:`nested_json`.

    ``device`` is where the estimator costs were measured (``cpu``: ``cpu_seconds_per_target`` are CPU seconds;
    an accelerator: wall seconds, the key's name kept for the committed files)."""
    keys = ("regret_at_1", "regret_at_3", "regret_at_5", "ndcg", "spearman", "cost_fraction")
    document = {
        "default": default,
        "candidates": int(frame["candidates"].max()),
        "targets": int(frame["target"].nunique()),
        "device": cost_device(frame),
        "estimators": {name: {key: _round(entry[key]) for key in keys} | {
            "kendall": _round(entry["kendall"]), "regret_at_1_ci": [_round(x) for x in entry["regret_at_1_ci"]],
            "regret_at_3_ci": [_round(x) for x in entry["regret_at_3_ci"]],
            "cpu_seconds_per_target": _round(entry["cpu_seconds_per_target"]),
            "amortized_seconds": _round(entry["amortized_seconds"])} | _advice_json(entry)
            for name, entry in summary.items()},
        "per_target": json.loads(frame.round(4).to_json(orient="records")),
    }
    if nested is not None:
        document["nested"] = nested_json(nested)
    return json.dumps(document, indent=2) + "\n"


def _advice_json(entry: dict[str, Any]) -> dict[str, Any]:
    """``{"advice": {...}}`` (see :func:`~upcycle.selection.evaluation.advice_summary`) where judged, else {}."""
    if "advice" not in entry:
        return {}
    return {"advice": {key: _round(value) if isinstance(value, float) else value
                       for key, value in entry["advice"].items()}}


def advice_markdown(summary: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    """The switch-or-stay section: per configuration, the advice ``select`` would have given on each held-out
    target, judged against the measured gain of its top pick over the base."""
    judged = [name for name in order if "advice" in summary[name]]
    if not judged:
        return []
    lines = [
        "", "## Should I switch? The advice, judged", "",
        "On each held-out target, what `select` would recommend from the configuration's top pick and the predicted "
        "gains (the estimator's own where it predicts gains, else the prior's: "
        f"{', '.join(sorted(GAIN_INTERVALS))} predict gains), judged against the top pick's measured gain over the "
        "base: a *switch* is right when that gain is above 0, a *stay* when it is not; *uncertain* decides nothing. "
        "Coverage: the share of measured top-pick gains inside their 95% predicted interval.",
        "",
        "| estimator | gains from | switch | stay | uncertain | right / decided | top-pick interval coverage | "
        "mean gain when switching |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in judged:
        advice = summary[name]["advice"]
        coverage = ("" if advice["top_interval_coverage"] is None
                    else f"{advice['top_interval_coverage']:.0%} of {advice['intervals']}")
        gain = "" if advice["mean_gain_when_switching"] is None else f"{advice['mean_gain_when_switching']:+.2f}"
        lines.append(f"| {markdown_cell(name)} | {markdown_cell(advice['gains_from'])} | {advice['switch']} | "
                     f"{advice['stay']} | {advice['uncertain']} | {advice['right']} / {advice['decided']} | "
                     f"{coverage} | {gain} |")
    return lines


_TITLES = {"regret_at_1": "Regret@1", "regret_at_3": "Regret@3", "regret_at_5": "Regret@5", "ndcg": "NDCG",
           "spearman": "Spearman", "kendall": "Kendall"}


def nested_json(nested: NestedSelection) -> dict[str, Any]:
    """The ``"nested"`` object: means over targets of Regret@1/3/5 and NDCG with their 95% intervals, cost,
    ``chosen`` (``{target: configuration chosen without it}``), ``chosen_counts``, ``selection_metric``, the
    competing ``candidates`` and ``in_sample`` (the configuration picked on every target and its optimistic means)."""
    summary = nested.summary()
    document: dict[str, Any] = {"selection_metric": summary["selection_metric"]}
    for metric in NESTED:
        document[metric] = _round(summary[metric])
        document[f"{metric}_ci"] = [_round(x) for x in summary[f"{metric}_ci"]]
    document["cost_fraction"] = _round(summary["cost_fraction"])
    document |= {key: summary[key] for key in ("chosen", "chosen_counts", "candidates")}
    document["in_sample"] = {key: value if isinstance(value, str) else _round(value)
                             for key, value in summary["in_sample"].items()}
    return document


def nested_markdown(nested: NestedSelection, *, targets: int | None = None) -> list[str]:
    """The headline section of the report: the nested figure, what each fold chose, how often each was chosen,
    and the in-sample figure it replaces."""
    summary = nested.summary()
    metric = _TITLES.get(nested.metric, nested.metric)
    count = targets if targets is not None else len(nested.per_target)
    figures = " | ".join(_with_interval(summary[m], summary[f"{m}_ci"], ndcg=m == "ndcg") for m in NESTED)
    lines = [
        "## Nested leave-one-target-out (the headline)",
        "",
        f"For each of the {count} targets, the configuration (the estimator, @ its sample size where recorded) with "
        f"the best mean {metric} over "
        "the *other* targets is chosen (ties: lower cost, then name) and judged on the held-out target, so no "
        "figure here saw its own target when its configuration was chosen. "
        f"Candidates: {', '.join(map(markdown_cell, nested.candidates))}.",
        "",
        "| Regret@1 | Regret@3 | Regret@5 | NDCG | cost |",
        "|---|---|---|---|---|",
        f"| {figures} | {summary['cost_fraction'] * 100:.2f}% |",
        "",
        f"| held-out target | chosen on the others | its mean {metric} on the others | Regret@1 | Regret@3 |",
        "|---|---|---|---|---|",
    ]
    for row in nested.per_target.itertuples():
        lines.append(f"| {markdown_cell(row.target)} | {markdown_cell(row.chosen)} | {_cell(row.inner)} | "
                     f"{_cell(row.regret_at_1)} | {_cell(row.regret_at_3)} |")
    counts = ", ".join(f"{markdown_cell(name)} {n} of {len(nested.per_target)}"
                       for name, n in summary["chosen_counts"].items())
    in_sample = summary["in_sample"]
    lines += [
        "",
        f"Chosen: {counts}.",
        f"Chosen on all {count} targets at once (not nested): {markdown_cell(in_sample['configuration'])}, "
        f"Regret@1 {in_sample['regret_at_1']:.2f}, Regret@3 {in_sample['regret_at_3']:.2f}, NDCG "
        f"{in_sample['ndcg']:.3f}: the optimistic figure the diagnostic table below would quote.",
        "",
        "## Diagnostic (not nested: every row saw every target)",
        "",
    ]
    return lines


def _with_interval(value: float, interval: list[float], *, ndcg: bool) -> str:
    if ndcg:
        return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"
    return f"{value:.2f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _cell(value: float) -> str:
    return "" if value is None or np.isnan(value) else f"{value:.2f}"


def _round(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def results_markdown(frame: pd.DataFrame, summary: dict[str, dict[str, Any]], default: str, bench: Bench,
                     nested: NestedSelection | None = None) -> str:
    """A Markdown report: with ``nested``, its headline section first (:func:`nested_markdown`) and the rest under
    "Diagnostic (not nested)"; then the summary table (best Regret@3 first) and per-target Regret@1 and @3.
    Estimator costs measured on an accelerator are said to be wall seconds on it; on the CPU (or unrecorded) the
    text is as it always was."""
    targets = sorted(frame["target"].unique())
    undefined = sorted(frame.loc[frame["regret_at_1"].isna(), "target"].unique())
    device = cost_device(frame)
    if device is None or device == "cpu":
        cost, per_target_cost = "estimator CPU seconds / brute-force CPU seconds", "CPU s / target"
    else:
        cost, per_target_cost = f"estimator wall seconds on {markdown_cell(device)} / brute-force seconds", "s / target"
    lines = [
        f"# Selecting starting points: {markdown_cell(bench.name)} ({markdown_cell(bench.arch.split('(')[0])})",
        "",
        f"Leave-one-target-out over the stored grid: {int(frame['candidates'].max())} candidates, "
        f"{len(targets)} targets, ground truth = mean test score over {len(bench.seeds)} seed(s) under "
        f"protocol {markdown_code(bench.protocol.name)}. "
        "Regret@k = (M - best true score in the predicted top k) / M x 100. "
        f"Cost = {cost} (finetuning every candidate once on the target). "
        "Brackets: 95% bootstrap interval over targets. "
        f"`{RANDOM}` is the exact expectation of a random order; `{BRUTE_FORCE}` picks by one seed's finetunes "
        "of every candidate and is judged against the other seeds: the noise floor of this ground truth.",
        "",
        *(nested_markdown(nested, targets=len(targets)) if nested is not None else []),
        f"| estimator | Regret@1 | Regret@3 | Regret@5 | NDCG | Spearman | Kendall | cost | "
        f"{per_target_cost} | fallbacks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(summary, key=lambda name: (summary[name]["regret_at_3"], summary[name]["regret_at_1"]))
    for name in order:
        entry = summary[name]
        label = f"**{markdown_cell(name)}** (default)" if name == default else markdown_cell(name)
        low1, high1 = entry["regret_at_1_ci"]
        low3, high3 = entry["regret_at_3_ci"]
        lines.append(
            f"| {label} | {entry['regret_at_1']:.2f} [{low1:.1f}, {high1:.1f}] | {entry['regret_at_3']:.2f} "
            f"[{low3:.1f}, {high3:.1f}] | {entry['regret_at_5']:.2f} | {entry['ndcg']:.3f} | "
            f"{entry['spearman']:.3f} | {entry['kendall']:.3f} | {entry['cost_fraction'] * 100:.2f}% | "
            f"{entry['cpu_seconds_per_target']:.1f} | {entry['fallbacks']} |"
        )
    if undefined:
        names = ", ".join(map(markdown_cell, undefined))
        lines += ["", f"Regret is undefined (best score <= 0) and left out of its means on: {names}."]
    lines += advice_markdown(summary, order)
    header = "| estimator | " + " | ".join(map(markdown_cell, targets)) + " |"
    for metric, title in (("regret_at_1", "Regret@1"), ("regret_at_3", "Regret@3")):
        lines += ["", f"## {title} per target", "", header, "|---|" + "---|" * len(targets)]
        per_target = frame.assign(configuration=configurations(frame)).pivot_table(
            index="configuration", columns="target", values=metric, aggfunc="mean")
        for name in order:
            cells = [("" if np.isnan(v) else f"{v:.1f}") for v in per_target.loc[name].reindex(targets)]
            lines.append(f"| {markdown_cell(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
