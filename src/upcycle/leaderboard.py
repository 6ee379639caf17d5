"""Leaderboard views of a bench: rows in memory, rendered as CSV, JSON or Markdown; model-index blocks.

Everything here is computed from the store's contents for one bench; nothing is trained.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from .bench import Bench, expected_cells, grid_frame
from .gains import gain_matrix, integrity_problems, summarize
from .store import Store

EXCLUDED = "overlap"  # a per-task cell left out because the candidate was trained on overlapping data


@dataclass(frozen=True)
class Leaderboard:
    """A bench's ranking. ``rows[0]`` is the vanilla base (absolute scores); then candidates by average gain."""

    bench: Bench
    rows: list[dict[str, Any]]
    targets: list[str]
    problems: list[str]
    cells_done: int
    cells_total: int


def build_leaderboard(bench: Bench, store: Store, *, draws: int = 2000) -> Leaderboard:
    grid = grid_frame(bench, store)
    expected = expected_cells(bench)
    rows = [_base_row(bench, grid)]
    if grid["is_base"].any() and (~grid["is_base"]).any():
        rows += _candidate_rows(bench, grid, expected, draws)
    total = sum(len(cells) for cells in expected.values())
    return Leaderboard(bench, rows, [t.name for t in bench.targets], integrity_problems(grid), len(grid), total)


def _base_row(bench: Bench, grid: pd.DataFrame) -> dict[str, Any]:
    """The vanilla base: its absolute mean score per target (x100), and whether every seed is there."""
    scores = grid[grid["is_base"]].groupby("target")["score"].agg(["mean", "count"])
    complete = all(t.name in scores.index and scores.loc[t.name, "count"] == len(bench.seeds) for t in bench.targets)
    return {
        "rank": None, "candidate": f"{bench.base.checkpoint.name} (vanilla base)", "source_task": None,
        "fingerprint": bench.base.checkpoint.fingerprint, "avg_gain": 0.0, "ci_low": None, "ci_high": None,
        "wins": None, "losses": None, "worst_loss": None, "fully_tested": complete,
        "scores": {t.name: round(scores.loc[t.name, "mean"] * 100, 2) if t.name in scores.index else None
                   for t in bench.targets},
    }


def _candidate_rows(
    bench: Bench, grid: pd.DataFrame, expected: dict[str, set[tuple[str, int]]], draws: int
) -> list[dict[str, Any]]:
    """Candidates by average gain; per-target gains, ``EXCLUDED`` for overlaps and None where not trained yet."""
    summary = summarize(grid, expected, draws=draws)
    gains = gain_matrix(grid)
    sources = {c.checkpoint.fingerprint: c.source_task for c in bench.candidates}
    rows = []
    for rank, item in enumerate(summary.itertuples(), start=1):
        per_task: dict[str, Any] = {}
        for target in (t.name for t in bench.targets):
            value = gains.loc[item.fingerprint].get(target, math.nan)
            if bench.suite.overlaps(sources.get(item.fingerprint), target):
                per_task[target] = EXCLUDED
            else:
                per_task[target] = None if pd.isna(value) else round(float(value), 2)
        rows.append({
            "rank": rank, "candidate": item.candidate, "source_task": sources.get(item.fingerprint),
            "fingerprint": item.fingerprint, "avg_gain": round(item.avg_gain, 2), "ci_low": round(item.ci_low, 2),
            "ci_high": round(item.ci_high, 2), "wins": item.wins, "losses": item.losses,
            "worst_loss": round(item.worst_loss, 2), "fully_tested": item.fully_tested, "gains": per_task,
        })
    return rows


def flat_rows(board: Leaderboard) -> list[dict[str, Any]]:
    """One flat dict per row (per-task values as ``gain:<target>``, the base's as ``score:<target>``)."""
    flat = []
    for row in board.rows:
        values = {k: v for k, v in row.items() if k not in ("scores", "gains")}
        if "scores" in row:
            values.update({f"score:{t}": v for t, v in row["scores"].items()})
        else:
            values.update({f"gain:{t}": v for t, v in row["gains"].items()})
        flat.append(values)
    return flat


def to_csv(board: Leaderboard) -> str:
    buffer = io.StringIO()
    pd.DataFrame(flat_rows(board)).to_csv(buffer, index=False)
    return buffer.getvalue()


def to_json(board: Leaderboard) -> str:
    bench = board.bench
    document = {
        "bench": bench.name, "arch": bench.arch, "protocol": bench.protocol.model_dump(), "seeds": list(bench.seeds),
        "targets": board.targets, "cells": {"done": board.cells_done, "total": board.cells_total},
        "units": "gains in accuracy/Spearman points (x100) over the base's mean over seeds; 95% bootstrap CI",
        "problems": board.problems, "rows": board.rows,
    }
    return json.dumps(document, indent=2)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:+.2f}"
    return str(value)


def to_markdown(board: Leaderboard) -> str:
    bench = board.bench
    header = ["#", "candidate", "source", "avg gain", "95% CI", "W/L", "worst", "full", *board.targets]
    lines = [
        f"## Leaderboard `{bench.name}` ({bench.arch})",
        "",
        (f"Protocol `{bench.protocol.name}` ({_protocol_summary(bench)}), seeds {list(bench.seeds)}, "
        f"{board.cells_done}/{board.cells_total} finetunes stored. Gains are points (x100) over the vanilla "
        "base's mean over seeds; the base row shows its absolute scores. CI: 95% bootstrap over targets and "
        f"seeds. `{EXCLUDED}`: left out because the candidate's source data overlaps the target."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in (0, 3, 5, 6) or i >= 8 else "---" for i in range(len(header))) + "|",
    ]
    for row in board.rows:
        if row["rank"] is None:
            cells = ["", row["candidate"], "", "0", "", "", "", "yes" if row["fully_tested"] else "no",
                     *(f"{row['scores'][t]:.2f}" if row["scores"][t] is not None else "" for t in board.targets)]
        else:
            cells = [str(row["rank"]), row["candidate"], row["source_task"] or "", f"{row['avg_gain']:+.2f}",
                     f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]", f"{row['wins']}/{row['losses']}",
                     f"{row['worst_loss']:+.2f}", "yes" if row["fully_tested"] else "no",
                     *(_cell(row["gains"][t]) for t in board.targets)]
        lines.append("| " + " | ".join(cells) + " |")
    if board.problems:
        lines += ["", "Integrity problems:", *(f"- {problem}" for problem in board.problems)]
    return "\n".join(lines) + "\n"


def _protocol_summary(bench: Bench) -> str:
    p = bench.protocol
    return (f"{p.max_train or 'all'} train / {p.max_eval or 'all'} eval examples, {p.epochs} epochs, "
            f"batch {p.batch_size}, lr {p.learning_rate:g}, train {p.train_precision}")


def model_index(store: Store, fingerprint: str, name: str) -> str:
    """A Hugging Face ``model-index`` YAML block: the checkpoint's mean test score per (task, protocol).

    These are scores *after finetuning from* this checkpoint (its value as a starting point), averaged
    over the stored seeds; the metric name says so.
    """
    frame = pd.DataFrame(store.results_for(fingerprint))
    results = []
    if not frame.empty:
        for (task, protocol, metric), rows in frame.groupby(["task", "protocol", "metric"]):
            results.append({
                "task": {"type": "text-classification" if metric == "accuracy" else "text-regression"},
                "dataset": {"name": task, "type": task, "split": "test"},
                "metrics": [{
                    "type": metric, "value": round(float(rows["score"].mean()), 4),
                    "name": f"{metric} after finetuning from this checkpoint ({protocol} protocol, "
                            f"mean of {len(rows)} seed{'s' if len(rows) > 1 else ''})",
                }],
            })
    return yaml.safe_dump({"model-index": [{"name": name, "results": results}]}, sort_keys=False)
