"""Selection-evaluation renderers: the committed JSON and the Markdown report. Pure functions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ..ranking import Bench
from ..selection.evaluation import BRUTE_FORCE, RANDOM, cost_device
from .markdown import markdown_cell, markdown_code


def results_json(frame: pd.DataFrame, summary: dict[str, dict[str, Any]], default: str) -> str:
    """The committed result file: ``{"default", "candidates", "targets", "device", "estimators": {NAME: {...}}}``.

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
            "amortized_seconds": _round(entry["amortized_seconds"])} for name, entry in summary.items()},
        "per_target": json.loads(frame.round(4).to_json(orient="records")),
    }
    return json.dumps(document, indent=2) + "\n"


def _round(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def results_markdown(frame: pd.DataFrame, summary: dict[str, dict[str, Any]], default: str, bench: Bench) -> str:
    """A Markdown report: the summary table (best Regret@3 first) and per-target Regret@3. Estimator costs
    measured on an accelerator are said to be wall seconds on it; on the CPU (or unrecorded) the text is as it
    always was."""
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
        f"| estimator | Regret@1 | Regret@3 | Regret@5 | NDCG | Spearman | Kendall | cost | {per_target_cost} | fallbacks |",
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
    header = "| estimator | " + " | ".join(map(markdown_cell, targets)) + " |"
    for metric, title in (("regret_at_1", "Regret@1"), ("regret_at_3", "Regret@3")):
        lines += ["", f"## {title} per target", "", header, "|---|" + "---|" * len(targets)]
        per_target = frame.pivot_table(index="estimator", columns="target", values=metric, aggfunc="mean")
        for name in order:
            cells = [("" if np.isnan(v) else f"{v:.1f}") for v in per_target.loc[name].reindex(targets)]
            lines.append(f"| {markdown_cell(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
