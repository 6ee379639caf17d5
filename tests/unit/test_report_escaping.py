"""Hostile names in the reports (issue 14): Markdown tables keep their shape, no raw HTML, CSV reads back the same."""

from __future__ import annotations

import html
import io
import re

import pandas as pd
import pytest
from rich.console import Console

from upcycle.checkpoints import CheckpointRef
from upcycle.protocols import get_protocol
from upcycle.ranking import Bench, Candidate, Leaderboard
from upcycle.ranking.leaderboard import EXCLUDED, LeaderboardRow
from upcycle.report.bench import analysis_markdown
from upcycle.report.leaderboard import to_csv, to_markdown, to_table
from upcycle.report.markdown import markdown_cell, markdown_code
from upcycle.report.selection import results_markdown
from upcycle.tasks import TaskRef

HOSTILE = ["a|b", "two\nlines", "cr\r\nlf", "<script>alert(1)</script>", "back`tick", 'say "hi", it\'s',
           "=SUM(A1:A9)", "+1", "-x", "@cmd", "slash\\|pipe", "trailing\\", "[x](javascript:alert(1))", "a & b"]
ORDINARY = ["minilm-dair_emotion", "bert-L6-H384-V30522", "org/model.v2 (vanilla base)", "tweet_eval_irony",
            "random (expected)", "brute force, 1 seed", "quick+", "sst2"]
TARGETS = ["t|1", "<b>t2</b>", "t`3"]


def cells(line: str) -> list[str]:
    """A GFM table row split the way GFM splits it: on every pipe that no backslash escapes."""
    assert line.startswith("|") and line.endswith("|"), line
    parts, current, chars = [], "", iter(line[1:-1])
    for char in chars:
        if char == "\\":
            current += char + next(chars, "")
        elif char == "|":
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def unescape(cell: str) -> str:
    """What a renderer shows for an escaped cell: backslash escapes and entities resolved."""
    return html.unescape(re.sub(r"\\(.)", r"\1", cell.strip()))


def shown(name: str) -> str:
    return re.sub(r"\r\n?|\n", " ", name)


def no_raw_html(text: str) -> None:
    assert "<script" not in text and not re.search(r"<[A-Za-z/!?]", text)  # no tag opens ('<=' in prose may)


# ------------------------------------------------------------------------------------------------- the helper


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_are_unchanged(name):
    assert markdown_cell(name) == name and markdown_code(name) == f"`{name}`"


def test_the_escapes():
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_cell("two\nlines") == "two lines" and markdown_cell("cr\r\nlf\rx") == "cr lf x"
    assert markdown_cell("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown_cell("back`tick") == "back\\`tick" and markdown_cell("a & b") == "a &amp; b"
    assert markdown_cell("slash\\|pipe") == "slash\\\\\\|pipe"  # the pipe stays escaped after the backslash
    assert markdown_cell("[x](y)") == "\\[x\\](y)"
    assert markdown_cell('say "hi"') == 'say "hi"' and markdown_cell("=SUM(A1)") == "=SUM(A1)"
    # a name that needs escaping cannot sit in a code span (nothing is escaped in there): written plain, escaped
    assert markdown_code("back`tick") == "back\\`tick" and markdown_code("<b>") == "&lt;b&gt;"


@pytest.mark.parametrize("name", HOSTILE)
def test_every_hostile_name_is_one_cell_that_reads_back(name):
    line = f"| {markdown_cell(name)} | x |"
    assert "\n" not in line and "\r" not in line
    assert [unescape(cell) for cell in cells(line)] == [shown(name), "x"]


# ------------------------------------------------------------------------------------------------ leaderboard


def _ref(name: str) -> CheckpointRef:
    return CheckpointRef(reference=f"/zoo/{name}", name=name, fingerprint=f"fp{len(name)}", model_type="bert")


def hostile_board(names: list[str] = HOSTILE, bench_name: str = "my`bench|\n<i>x</i>") -> Leaderboard:
    """tests/unit/test_report_renderers.py's board, with hostile names everywhere a user names something."""
    targets = tuple(TaskRef(source=f"/data/{i}", name=t, fingerprint=f"t{i}") for i, t in enumerate(TARGETS))
    bench = Bench(name=bench_name, arch="bert<script>|`", base=Candidate(checkpoint=_ref("base|<b>")),
                  candidates=tuple(Candidate(checkpoint=_ref(n), source_task=n) for n in names), targets=targets,
                  seeds=(0, 1), protocol=get_protocol("quick", {"name": "q`uick|<p>"}))
    rows = [LeaderboardRow(rank=None, candidate="base|<b>", source_task=None, fingerprint="base-fp", avg_gain=0.0,
                           ci_low=None, ci_high=None, wins=None, losses=None, worst_loss=None, fully_tested=True,
                           values={"t|1": 55.12, "<b>t2</b>": 80.0, "t`3": None})]
    for rank, name in enumerate(names, start=1):
        rows.append(LeaderboardRow(rank=rank, candidate=name, source_task=name, fingerprint=f"fp{rank}",
                                   avg_gain=1.5 - rank, ci_low=-0.25, ci_high=3.0, wins=1, losses=0, worst_loss=-0.5,
                                   fully_tested=False, values={"t|1": -1.5, "<b>t2</b>": EXCLUDED, "t`3": None}))
    return Leaderboard(bench, rows, list(TARGETS), [f"{names[0]} has several scores for {TARGETS[1]} seed 0"], 7, 8)


def test_markdown_table_keeps_its_columns_and_its_names():
    board = hostile_board()
    markdown = to_markdown(board)
    no_raw_html(markdown)
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(board.rows)  # header, rule, one line per row: no newline got through
    assert {len(cells(line)) for line in table} == {8 + len(TARGETS)}
    assert [unescape(cell) for cell in cells(table[0])[8:]] == TARGETS
    for line, row in zip(table[2:], board.rows, strict=True):
        found = [unescape(cell) for cell in cells(line)]
        assert found[1] == shown(row.candidate) and found[2] == shown(row.source_task or "")
    assert cells(table[3])[3:8] == [" +0.50 ", " [-0.25, +3.00] ", " 1/0 ", " -0.50 ", " no "]  # numbers as before
    assert cells(table[4])[3] == " -0.50 " and cells(table[4])[8:] == [" -1.50 ", " overlap ", "  "]


def test_markdown_heading_and_prose_stay_on_their_line_without_open_code_spans():
    markdown = to_markdown(hostile_board())
    lines = markdown.splitlines()
    heading, protocol = lines[0], lines[2]
    assert heading == "## Leaderboard my\\`bench\\| &lt;i&gt;x&lt;/i&gt; (bert&lt;script&gt;\\|\\`)"
    assert protocol.startswith("Protocol q\\`uick\\|&lt;p&gt; (1000 train")
    for line in (heading, protocol):
        assert len(re.findall(r"(?<!\\)`", line)) % 2 == 0  # every unescaped backtick pairs with another
    problems = lines[lines.index("Integrity problems:") + 1:]
    assert problems == ["- a\\|b has several scores for &lt;b&gt;t2&lt;/b&gt; seed 0"]


def test_csv_reads_back_to_the_same_names_and_numbers():
    board = hostile_board()
    text = to_csv(board)
    back = pd.read_csv(io.StringIO(text))
    assert back["candidate"].tolist() == [row.candidate for row in board.rows]
    assert back["source_task"].tolist()[1:] == HOSTILE  # '=SUM(A1:A9)', '+1', '-x', '@cmd' as they were
    assert [column for column in back.columns if ":" in column] == [f"score:{t}" for t in TARGETS] + [
        f"gain:{t}" for t in TARGETS]
    assert back["ci_low"].tolist()[1:] == [-0.25] * len(HOSTILE) and back["ci_low"].dtype == float
    assert back["worst_loss"].iloc[1] == -0.5 and back["gain:t|1"].iloc[1] == -1.5


def test_terminal_table_title_is_escaped_for_rich():
    board = hostile_board(["[/red] closes nothing"], bench_name="[/red] bench")
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(to_table(board))  # unescaped, '[/red]' in a name raises MarkupError
    assert "[/red] bench (bert" in console.file.getvalue() and "[/red] closes nothing" in console.file.getvalue()


# ------------------------------------------------------------------------------------- selection and analysis


def test_selection_markdown_escapes_targets_and_names():
    bench = hostile_board().bench
    estimators = ["logme", "a|b", "<script>x</script>"]
    frame = pd.DataFrame([{"estimator": e, "target": t, "candidates": 3, "regret_at_1": float("nan") if t == "t`3"
                           else 1.0, "regret_at_3": 0.5} for e in estimators for t in TARGETS])
    entry = {"regret_at_1": 1.0, "regret_at_3": 0.5, "regret_at_5": 0.0, "ndcg": 0.9, "spearman": 0.1,
             "kendall": 0.1, "cost_fraction": 0.05, "cpu_seconds_per_target": 2.0, "fallbacks": 0,
             "regret_at_1_ci": (0.5, 1.5), "regret_at_3_ci": (0.0, 1.0)}
    markdown = results_markdown(frame, {e: entry for e in estimators}, "a|b", bench)
    no_raw_html(markdown)
    lines = markdown.splitlines()
    assert lines[0] == "# Selecting starting points: my\\`bench\\| &lt;i&gt;x&lt;/i&gt; (bert&lt;script&gt;\\|\\`)"
    assert "protocol q\\`uick\\|&lt;p&gt;." in markdown and "means on: t\\`3." in markdown
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 3 * (2 + len(estimators))
    summary, per_target = table[:5], table[5:]
    assert {len(cells(line)) for line in summary} == {10} and {len(cells(line)) for line in per_target} == {4}
    assert [unescape(cell) for cell in cells(per_target[0])] == ["estimator", *sorted(TARGETS)]
    assert unescape(cells(summary[3])[0]) == "**a|b** (default)"


def test_analysis_markdown_escapes_bench_and_target_names():
    result = {
        "beating_base": {"positive_avg_gain": 1, "candidates": 2, "ci_above_zero": 0, "ci_below_zero": 0},
        "additive_model": {"cells": 6, "variance": 1.0, "additive": {"r2": 0.3, "loo_mse": 1.0},
                           "candidate_only": {"r2": 0.1}, "target_only": {"r2": 0.2},
                           "shuffled": {"loo_mse_mean": 2.0, "loo_mse_std": 0.1, "r2_mean": 0.1, "r2_std": 0.01}},
        "single_target_signal": {"mean": 0.1, "median": 0.1, "best": "t|1", "worst": "<b>t2</b>",
                                 "per_target": {"t|1": 0.5, "<b>t2</b>": -0.25}},
        "linear_probe_signal": {"examples": 10, "target": "t`3\nx", "candidates": 2, "seconds": 1.0,
                                "spearman_vs_avg_gain_elsewhere": 0.2, "spearman_vs_gain_on_target": -0.1},
        "ranking_stability": [{"targets": 1, "kendall_tau": 0.5, "top1_agreement": 0.5, "top3_overlap": 0.5}],
    }
    markdown = analysis_markdown(hostile_board().bench, result)
    no_raw_html(markdown)
    lines = markdown.splitlines()
    assert lines[0] == "## Analysis of my\\`bench\\| &lt;i&gt;x&lt;/i&gt; (bert&lt;script&gt;\\|\\`)"
    assert "best target t\\|1 (0.50), worst &lt;b&gt;t2&lt;/b&gt; (-0.25)." in markdown
    assert "of 10 t\\`3 x training examples" in markdown and "with the gain on t\\`3 x itself." in markdown
    assert len(lines) == 11  # nothing split a line: 1 heading, blank, 5 bullets, blank, 3 table lines
