"""``upcycle estimators | select | evaluate-selection``: which checkpoint to start from, and how well each
estimator answers that. pandas (selection evaluation, reports) is imported inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError
from ..protocols import parse_overrides
from ..store import Store
from .common import (
    AllowPickleOption,
    DbOption,
    DeviceOption,
    LabelColumnOption,
    ProtocolOption,
    SetOption,
    TaskTypeOption,
    TextColumnOption,
    TextPairColumnOption,
    app,
    check_choice,
    console,
    counter,
    friendly_errors,
    progress_bars,
    split_list,
    use_device,
    warn,
)


@app.command()
@friendly_errors
def estimators() -> None:
    """List the selection estimators (``upcycle select --estimator NAME``)."""
    from ..selection.estimators import DEFAULT, ESTIMATORS  # lazy: pandas, scipy

    table = Table(title="selection estimators")
    for column in ("name", "what it measures", "falls back to"):
        table.add_column(column)
    for name, cls in ESTIMATORS.items():
        table.add_row(f"{name} (default)" if name == DEFAULT else name, cls.summary, cls.fallback or "")
    console.print(table)
    if DEFAULT not in ESTIMATORS:
        console.print(f"default: {DEFAULT} (rank fusion of the estimators joined by '+')", highlight=False)


@app.command()
@friendly_errors
def select(
    target: Annotated[str, typer.Argument(
        help="Your dataset: CSV/TSV/JSONL/Parquet file or folder, data-dir name or hub id.")],
    candidates: Annotated[str | None, typer.Option(
        help="Comma-separated zoo names, fingerprints or paths "
             "(default: every finetuned checkpoint in the zoo).")] = None,
    estimator: Annotated[str | None, typer.Option(
        help="Estimator (see `upcycle estimators`; default logme), or several joined by + for rank fusion.")] = None,
    verify_top: Annotated[str, typer.Option(
        help="Finetune the top K and the vanilla base on TARGET to check; auto: K = the candidates whose "
             "predicted-gain intervals overlap the top pick's (1 to 5; 2 when the estimator predicts no gain).")] = "0",
    budget: Annotated[float | None, typer.Option(
        help="Seconds the estimation may spend per architecture, on the device's cost clock (CPU seconds on the CPU, "
             "wall seconds on an accelerator); over it, a cheaper estimator takes over. --verify-top's finetunes "
             "count too: K is cut to fit.")] = None,
    examples: Annotated[int, typer.Option(help="Target training examples the estimators read.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the target sample.")] = 0,
    seeds: Annotated[int, typer.Option(help="Seeds per verification finetune.")] = 1,
    protocol: ProtocolOption = "converged",
    set_: SetOption = None,
    text_column: TextColumnOption = "text",
    text_pair_column: TextPairColumnOption = None,
    label_column: LabelColumnOption = "label",
    task_type: TaskTypeOption = "auto",
    save: Annotated[Path | None, typer.Option(
        help="Keep the chosen model: finetune the measured best (or the top pick) on TARGET, save it here and "
             "register it.")] = None,
    allow_pickle: AllowPickleOption = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Rank checkpoints as starting points for TARGET, cheaply; optionally verify the top K and keep the best."""
    from ..selection import select as run_select  # lazy: pandas, scipy
    from ..selection.estimators import DEFAULT  # lazy: pandas, scipy

    use_device(device)
    check_choice("--format", fmt, ("table", "json"))
    top = parse_verify_top(verify_top)
    with Store(db) as store, progress_bars() as progress:
        selections = run_select(
            store, target, candidates=split_list(candidates), estimator=estimator or DEFAULT,
            verify_top=top, budget=budget, examples=examples, seed=seed, seeds=seeds, protocol=protocol,
            overrides=parse_overrides(set_ or []), progress=progress if top or save else None,
            save=save, allow_pickle=allow_pickle, text_column=text_column, text_pair_column=text_pair_column,
            label_column=label_column, task_type=task_type,
        )
    if fmt == "json":
        for message in (m for selection in selections for m in _notes(selection)):
            warn(message)
        console.print_json(json.dumps([selection.to_dict() for selection in selections]))
        return
    for selection in selections:
        _print_selection(selection)


def parse_verify_top(text: str) -> int | Literal["auto"]:
    """``--verify-top``: ``auto`` or a count >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        top = int(text)
    except ValueError:
        top = -1
    if top < 0:
        raise ConfigError(f"--verify-top must be auto or a number >= 0, not '{text}'.")
    return top


def _print_selection(selection) -> None:
    result = selection.estimate
    used = result.used if result.used == result.requested else f"{result.used} (fallback for {result.requested})"
    verified = {v.entry.fingerprint: v for v in selection.verified}
    table = Table(title=f"starting points for {escape(selection.target)} ({escape(selection.arch)})")
    for column in ("rank", "candidate", "source task", f"{used} score"):
        table.add_column(column, justify="right" if column in ("rank",) else "left")
    if verified:
        table.add_column(f"measured {selection.metric}", justify="right")
    for rank, (entry, score) in enumerate(selection.ranking, start=1):
        cells = [str(rank), escape(entry.name), escape(entry.source_task or ""), f"{score:.4f}"]
        if verified:
            cells.append(_measured(verified[entry.fingerprint]) if entry.fingerprint in verified else "")
        table.add_row(*cells)
    console.print(table)
    for message in _notes(selection):
        warn(message)
    finetunes = [(v.entry.name, v.notes) for v in selection.verified]
    if selection.kept is not None:
        finetunes.append((selection.kept.start.name, selection.kept.notes))
    shared = set.intersection(*(set(notes) for _, notes in finetunes)) if finetunes else set()
    for note in dict.fromkeys(note for _, notes in finetunes for note in notes if note in shared):
        warn(f"finetuned on {selection.target}: {note}")  # about the target's data: true of every run
    for line in dict.fromkeys(f"{name} finetuned on {selection.target}: {note}" for name, notes in finetunes
                              for note in notes if note not in shared):
        warn(line)
    where = "of CPU time" if result.device == "cpu" else f"on {result.device}"
    console.print(f"cost: {result.seconds:.1f} s {escape(where)} for this target"
                  + (f" (+ {result.amortized_seconds:.1f} s on source data, once per candidate)"
                     if result.amortized_seconds else ""), highlight=False)
    _print_advice(selection)
    best = selection.measured_best
    if best is not None:
        base = next((v for v in selection.verified if v.is_base), None)
        where = "the vanilla base" if best.is_base else f"predicted rank {best.predicted_rank}"
        line = f"measured best: [bold]{escape(best.entry.name)}[/] {selection.metric} {best.score:.4f} ({where})"
        if base is not None and not best.is_base:
            line += f", {100 * (best.score - base.score):+.1f} points over {escape(base.entry.name)}"
            interval = selection.gain_interval
            if interval is not None:
                line += f" (95% CI over {len(best.scores)} seeds: [{interval[0]:+.1f}, {interval[1]:+.1f}])"
        console.print(line, highlight=False)
    choice = selection.choice
    if choice is not None:
        console.print(f"start from: [bold]{escape(choice.name)}[/] at {escape(choice.path)}", highlight=False)
    if selection.kept is not None:
        kept = selection.kept
        console.print(f"kept: {escape(kept.start.name)} finetuned on {escape(selection.target)} ({selection.metric} "
                      f"{kept.score:.4f}) saved to [bold]{escape(kept.path)}[/], registered as "
                      f"{escape(kept.entry.name)}", highlight=False)
    elif choice is not None:
        console.print("to keep it finetuned on this data: add --save DIR", style="dim", highlight=False)


def _print_advice(selection) -> None:
    """The top pick's predicted gain over the base and, before any verification, whether to switch at all; how
    --verify-top's K was set."""
    from ..selection.advice import RANKING_ONLY  # lazy: pandas, scipy
    predicted, recommendation = selection.predicted_gain, selection.recommendation
    base = selection.base.name if selection.base is not None else "the base"
    if predicted is not None:
        interval = ("" if predicted.interval is None
                    else f" [{predicted.interval[0]:+.1f}, {predicted.interval[1]:+.1f}]")
        source = selection.gain_model if selection.gain_estimate is None else \
            f"{selection.gain_model}; the ranking is {selection.estimate.used}'s"
        console.print(f"predicted gain of {escape(selection.top.name)} over {escape(base)}: {predicted.gain:+.1f} "
                      f"points{interval} ({'95% interval for this target, ' if interval else ''}{escape(source)})",
                      highlight=False)
    if selection.verification is not None:
        console.print(escape(selection.verification), style="dim", highlight=False)
    if selection.verified:
        return  # measured: the measured best says more than the prediction
    if recommendation.action == RANKING_ONLY:
        console.print(escape(recommendation.message), style="dim", highlight=False)
    else:
        console.print(f"recommendation: [bold]{escape(recommendation.message)}[/]", highlight=False)


def _notes(selection) -> tuple[str, ...]:
    """What the ranking's estimator noted, then what the gain model noted when it is another."""
    gains = selection.gain_estimate
    return tuple(dict.fromkeys((*selection.estimate.notes, *(() if gains is None else gains.notes))))


def _measured(verified) -> str:
    """Mean over seeds, with its 95% interval when there are several seeds."""
    interval = verified.interval
    text = f"{verified.score:.4f}"
    return text if interval is None else f"{text} [{interval[0]:.4f}, {interval[1]:.4f}]"


@app.command("evaluate-selection")
@friendly_errors
def evaluate_selection(
    bench_name: Annotated[str | None, typer.Option("--bench", help="Bench whose grid is the ground truth.")] = None,
    estimators_: Annotated[str | None, typer.Option(
        "--estimators",
        help="Comma-separated estimators (default: all); a+b is a rank fusion, one more candidate; 'all' stands "
             "for every registered estimator (all,logme+prior).")] = None,
    examples: Annotated[str, typer.Option(
        help="Target training examples the estimators read; several (64,128,256) make the sample size part of "
             "what the nested evaluation chooses.")] = "128",
    seed: Annotated[int, typer.Option(help="Seed of the target samples.")] = 0,
    select_by: Annotated[str, typer.Option(
        help="What the nested evaluation chooses each fold's configuration by, on the other targets: regret_at_1, "
             "regret_at_3, regret_at_5, ndcg, spearman or kendall.")] = "regret_at_3",
    out: Annotated[Path | None, typer.Option(
        help="Write OUT.md and OUT.json (e.g. benchmarks/results/selection_minilm).")] = None,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Leave-one-target-out over a bench grid. Headline: the nested figure (each target judged with the estimator
    and sample size chosen on the other targets); below it, per estimator, Regret@1/3/5, NDCG, Spearman, Kendall
    and cost (a diagnostic: every row saw every target)."""
    from ..ranking import load_bench  # lazy: pandas
    from ..report import write_atomic  # lazy: pandas
    from ..report.selection import results_json, results_markdown  # lazy: pandas
    from ..selection import evaluate_selection as run  # lazy: pandas, scipy
    from ..selection.estimators import DEFAULT, DEFAULT_EXAMPLES, ESTIMATORS  # lazy: pandas, scipy
    from ..selection.evaluation import QUALITY, nested_selection, summarize_selection  # lazy: pandas, scipy

    use_device(device)
    sizes = parse_sizes(examples)
    check_choice("--select-by", select_by, tuple(QUALITY))
    names = expand_estimators(split_list(estimators_) or ["all"], ESTIMATORS.names())
    with Store(db) as store:
        grid = load_bench(store, bench_name)
        bar, job = counter("estimating", len(grid.targets) * len(names) * len(sizes), eta=False)
        with bar:
            frame = run(store, grid, names, examples=sizes, seed=seed,
                        on_progress=lambda target, name, row: bar.advance(job))
    summary = summarize_selection(frame)
    default = DEFAULT if DEFAULT in names else names[0]
    if len(sizes) > 1:
        default = f"{default}@{DEFAULT_EXAMPLES if DEFAULT_EXAMPLES in sizes else sizes[0]}"
    nested = nested_selection(frame, metric=select_by) if frame["target"].nunique() > 1 else None
    if nested is None:
        warn("one target only: no nested figure (it needs at least two targets).")
    markdown = results_markdown(frame, summary, default, grid, nested)
    if out is not None:
        write_atomic(out.with_suffix(".md"), markdown)
        write_atomic(out.with_suffix(".json"), results_json(frame, summary, default, nested))
        console.print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    console.print(markdown, markup=False, highlight=False)


def expand_estimators(asked: list[str], registered: list[str]) -> list[str]:
    """``--estimators``: each name in order, ``all`` standing for every registered estimator, duplicates dropped."""
    return list(dict.fromkeys(name for part in asked for name in (registered if part == "all" else [part])))


def parse_sizes(text: str) -> list[int]:
    """``"64,128"`` -> ``[64, 128]``; anything but positive integers is one error line."""
    try:
        sizes = [int(part) for part in split_list(text) or []]
    except ValueError:
        sizes = []
    if not sizes or any(n < 2 for n in sizes):
        raise ConfigError(f"--examples must be one or more sample sizes >= 2, such as 128 or 64,128,256; not '{text}'.")
    return list(dict.fromkeys(sizes))
