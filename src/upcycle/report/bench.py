"""The bench report: the analysis as a Python call, its Markdown, and the files ``upcycle report`` writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import UpcycleError
from ..ranking import Bench, build_leaderboard, expected_cells, gain_matrix, grid_frame, load_bench, summarize
from ..ranking.analysis import findings, probe_signal
from ..ranking.bench import linear_probes
from ..store import Store
from .files import write_atomic
from .leaderboard import to_markdown
from .markdown import markdown_cell, markdown_code
from .plots import bench_figures, write_figures

GRID_CSV_COLUMNS = ["candidate", "fingerprint", "target", "seed", "metric", "score"]


def analyze(store: Store, bench: Bench | str | None = None, *, probe_target: str | None = None,
            probe_examples: int = 500) -> dict[str, Any]:
    """The recycling study's findings on a bench (by name; default the latest): who beats the base, the
    additive model, one target as a cheap signal, ranking stability, and with ``probe_target`` a linear probe
    on that task as a signal. Raises UpcycleError while the grid lacks the base or the candidates."""
    grid = bench if isinstance(bench, Bench) else load_bench(store, bench)
    frame = grid_frame(grid, store)
    if not frame["is_base"].any() or frame["is_base"].all():
        raise UpcycleError(f"Bench '{grid.name}' has no results for both the base and candidates yet.")
    gains = gain_matrix(frame)
    if gains.shape[0] < 3 or gains.shape[1] < 2:
        raise UpcycleError("The analysis needs at least 3 candidates and 2 targets with results.")
    result = findings(summarize(frame, expected_cells(grid)), gains)
    adopted = store.measured_elsewhere([grid.spec(*cell).key() for cell in grid.cells()])
    if adopted:  # cells measured on an earlier build of the same expert (a grid resumed on another machine)
        result["earlier_builds"] = {"cells": len(frame), "adopted": len(adopted),
                                    "checkpoints": len(set(adopted.values()))}
    if probe_target is not None:
        started = time.perf_counter()
        probes = linear_probes(grid, probe_target, max_examples=probe_examples)
        names = {c.checkpoint.fingerprint: c.checkpoint.name for c in (grid.base, *grid.candidates)}
        signal = probe_signal(probes, gains, probe_target)
        signal.update(examples=probe_examples, seconds=round(time.perf_counter() - started, 1),
                      accuracy={names[fingerprint]: round(score, 4) for fingerprint, score in probes.items()})
        result["linear_probe_signal"] = signal
    return result


def write_report(store: Store, out: str | Path, prefix: str, bench: Bench | str | None = None, *,
                 probe_target: str | None = None, probe_examples: int = 500, plots: bool = False) -> list[Path]:
    """Write a bench's grid (``PREFIX.csv``), leaderboard (``PREFIX_leaderboard.md``) and analysis
    (``PREFIX_analysis.md`` and ``.json``) to ``out``, each atomically; return the paths written. With ``plots``,
    also the site's figures as SVG and PNG: ``PREFIX_gains`` (average gain and 95% interval per candidate) and
    ``PREFIX_heatmap`` (gain per candidate and target)."""
    grid = bench if isinstance(bench, Bench) else load_bench(store, bench)
    frame = grid_frame(grid, store)
    board = build_leaderboard(grid, store)
    result = analyze(store, grid, probe_target=probe_target, probe_examples=probe_examples)
    out = Path(out)
    table = frame.sort_values(["candidate", "target", "seed"])[GRID_CSV_COLUMNS].to_csv(index=False)
    written = [
        write_atomic(out / f"{prefix}.csv", table),
        write_atomic(out / f"{prefix}_leaderboard.md", to_markdown(board)),
        write_atomic(out / f"{prefix}_analysis.md", analysis_markdown(grid, result)),
        write_atomic(out / f"{prefix}_analysis.json", json.dumps(result, indent=2) + "\n"),
    ]
    if plots:
        written += write_figures(bench_figures(board), out, prefix)
    return written


def analysis_markdown(bench: Bench, result: dict[str, Any]) -> str:
    """The analysis as Markdown (the committed ``*_analysis.md``)."""
    beating, additive = result["beating_base"], result["additive_model"]
    signal, stability = result["single_target_signal"], result["ranking_stability"]
    shuffled = additive["shuffled"]
    lines = [
        f"## Analysis of {markdown_code(bench.name)} ({markdown_cell(bench.arch)})",
        "",
        f"- **Beating the base**: {beating['positive_avg_gain']} of {beating['candidates']} candidates have a "
        f"positive average gain; the 95% CI lies above zero for {beating['ci_above_zero']} and below zero for "
        f"{beating['ci_below_zero']}.",
        f"- **Additive model** gain ~ candidate + target over {additive['cells']} cells: R^2 "
        f"{additive['additive']['r2']:.3f} (candidate alone {additive['candidate_only']['r2']:.3f}, target alone "
        f"{additive['target_only']['r2']:.3f}); leave-one-cell-out MSE {additive['additive']['loo_mse']:.2f} "
        f"vs {shuffled['loo_mse_mean']:.2f} +- {shuffled['loo_mse_std']:.2f} with the gains shuffled "
        f"(shuffled R^2 {shuffled['r2_mean']:.3f} +- {shuffled['r2_std']:.3f}); gain variance "
        f"{additive['variance']:.2f}.",
        f"- **One target as a cheap signal**: Spearman between a candidate's gain on one target and its average "
        f"gain on the others: mean {signal['mean']:.2f}, median {signal['median']:.2f}; best target "
        f"{markdown_cell(signal['best'])} ({signal['per_target'][signal['best']]:.2f}), worst "
        f"{markdown_cell(signal['worst'])} "
        f"({signal['per_target'][signal['worst']]:.2f}).",
        *_probe_lines(result.get("linear_probe_signal")),
        *_earlier_build_lines(result.get("earlier_builds")),
        "- **Ranking stability** (random subsets of k targets vs all targets):",
        "",
        "| k targets | Kendall tau | same top-1 | top-3 overlap |",
        "|---:|---:|---:|---:|",
        *(f"| {row['targets']} | {row['kendall_tau']:.2f} | {row['top1_agreement']:.2f} | {row['top3_overlap']:.2f} |"
          for row in stability),
    ]
    return "\n".join(lines) + "\n"


def _earlier_build_lines(builds: dict[str, Any] | None) -> list[str]:
    if not builds:
        return []
    return [f"- **Cells measured on an earlier build**: {builds['adopted']} of {builds['cells']} cells ran on "
            f"{builds['checkpoints']} checkpoint(s) since rebuilt from the same recipe (another machine rounds "
            f"differently) and count as the rebuilds' (`upcycle store merge --adopt-rebuilds`)."]


def _probe_lines(probe: dict[str, Any] | None) -> list[str]:
    if not probe or "spearman_vs_avg_gain_elsewhere" not in probe:
        return []
    on_target = probe.get("spearman_vs_gain_on_target")
    target = markdown_cell(probe["target"])
    return [
        f"- **A linear probe as a cheap signal**: logistic regression on frozen mean-pooled features of "
        f"{probe['examples']} {target} training examples ({probe['candidates']} candidates, "
        f"{probe['seconds']:.0f}s in all): Spearman {probe['spearman_vs_avg_gain_elsewhere']:.2f} with the average "
        f"gain on the other targets" + (f", {on_target:.2f} with the gain on {target} itself." if
                                         on_target is not None else ".")
    ]
