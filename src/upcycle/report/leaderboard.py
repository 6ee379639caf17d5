"""Leaderboard renderers: the same typed rows as a terminal table, Markdown, CSV or JSON. Pure functions."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
from rich.markup import escape
from rich.table import Table

from ..ranking import Bench, Leaderboard
from ..ranking.leaderboard import EXCLUDED
from .markdown import markdown_cell, markdown_code

FORMATS = ("table", "csv", "json", "markdown")
TABLE_NOTE = "base row: absolute scores x100. '-': source data overlaps the target, not counted."


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def to_table(board: Leaderboard) -> Table:
    """A Rich table: gains coloured by sign, overlaps as '-', names escaped for Rich markup."""
    table = Table(title=f"{escape(board.bench.name)} ({escape(board.bench.arch)}): gain over the vanilla base, points; "
                        f"{board.cells_done}/{board.cells_total} finetunes", title_justify="left")
    for column in ("#", "candidate", "source", "avg gain", "95% CI", "W/L", "worst", "full", *board.targets):
        table.add_column(escape(column), justify="left" if column in ("candidate", "source") else "right")
    for row in board.rows:
        if row.is_base:
            scores = [f"{row.values[t]:.1f}" if row.values[t] is not None else "" for t in board.targets]
            table.add_row("", escape(row.candidate), "", "0", "", "", "", _yes(row.fully_tested), *scores,
                          style="bold")
            continue
        cells = []
        for target in board.targets:
            value = row.values[target]
            cells.append("-" if value == EXCLUDED else "" if value is None else
                         f"[{'green' if value > 0 else 'red'}]{value:+.1f}[/]")
        table.add_row(str(row.rank), escape(row.candidate), escape(row.source_task or ""), f"{row.avg_gain:+.2f}",
                      f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]", f"{row.wins}/{row.losses}",
                      f"{row.worst_loss:+.2f}", _yes(row.fully_tested), *cells)
    return table


def flat_rows(board: Leaderboard) -> list[dict[str, Any]]:
    """One flat dict per row (per-task values as ``gain:<target>``, the base's as ``score:<target>``)."""
    flat = []
    for row in board.rows:
        values = {k: v for k, v in row.to_dict().items() if k not in ("scores", "gains")}
        prefix = "score" if row.is_base else "gain"
        values.update({f"{prefix}:{t}": v for t, v in row.values.items()})
        flat.append(values)
    return flat


def to_csv(board: Leaderboard) -> str:
    """The flat rows as CSV. pandas quotes cells with commas, quotes or newlines, so any name reads back as it
    was. No guard against spreadsheet formulas (a name starting with ``=``, ``+``, ``-`` or ``@``): the usual
    guard, a leading ``'``, changes the value, so the CSV would no longer read back to the same names in pandas
    or scripts, its main readers; and names come from the user's own checkpoints and tasks (hub ids cannot start
    with those characters). Numbers, negative ones included, are written as numbers either way."""
    buffer = io.StringIO()
    pd.DataFrame(flat_rows(board)).to_csv(buffer, index=False)
    return buffer.getvalue()


def to_json(board: Leaderboard) -> str:
    bench = board.bench
    document = {
        "bench": bench.name, "arch": bench.arch, "protocol": bench.protocol.model_dump(), "seeds": list(bench.seeds),
        "targets": board.targets, "cells": {"done": board.cells_done, "total": board.cells_total},
        "units": "gains in accuracy/Spearman points (x100) over the base's mean over seeds; 95% bootstrap CI",
        "problems": board.problems, "rows": [row.to_dict() for row in board.rows],
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
    header = ["#", "candidate", "source", "avg gain", "95% CI", "W/L", "worst", "full",
              *(markdown_cell(target) for target in board.targets)]
    lines = [
        f"## Leaderboard {markdown_code(bench.name)} ({markdown_cell(bench.arch)})",
        "",
        (f"Protocol {markdown_code(bench.protocol.name)} ({_protocol_summary(bench)}), seeds {list(bench.seeds)}, "
        f"{board.cells_done}/{board.cells_total} finetunes stored. Gains are points (x100) over the vanilla "
        "base's mean over seeds; the base row shows its absolute scores. CI: 95% bootstrap over targets and "
        f"seeds. `{EXCLUDED}`: left out because the candidate's source data overlaps the target."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in (0, 3, 5, 6) or i >= 8 else "---" for i in range(len(header))) + "|",
    ]
    for row in board.rows:
        if row.is_base:
            cells = ["", markdown_cell(row.candidate), "", "0", "", "", "", _yes(row.fully_tested),
                     *(f"{row.values[t]:.2f}" if row.values[t] is not None else "" for t in board.targets)]
        else:
            cells = [str(row.rank), markdown_cell(row.candidate), markdown_cell(row.source_task or ""),
                     f"{row.avg_gain:+.2f}", f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]", f"{row.wins}/{row.losses}",
                     f"{row.worst_loss:+.2f}", _yes(row.fully_tested), *(_cell(row.values[t]) for t in board.targets)]
        lines.append("| " + " | ".join(cells) + " |")
    if board.problems:
        lines += ["", "Integrity problems:", *(f"- {markdown_cell(problem)}" for problem in board.problems)]
    return "\n".join(lines) + "\n"


def _protocol_summary(bench: Bench) -> str:
    p = bench.protocol
    return (f"{p.max_train or 'all'} train / {p.max_eval or 'all'} eval examples, {p.epochs} epochs, "
            f"batch {p.batch_size}, lr {p.learning_rate:g}, train {p.train_precision}")
