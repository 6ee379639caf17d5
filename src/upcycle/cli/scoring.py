"""``upcycle score``: zero-shot classification with a generative LM (direct, channel, flipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..scoring import CALIBRATIONS, NORMALIZATIONS
from ..store import Store
from .common import DbOption, DeviceOption, app, console, friendly_errors, progress_bars, split_list, use_device
from .experts import ExpertsOption, print_route


@app.command()
@friendly_errors
def score(
    task: Annotated[str, typer.Argument(help="A shared task's name, a dataset folder, or a CSV/TSV/JSONL file.")],
    model: Annotated[str, typer.Option(
        help="smollm2 (default), a local causal or seq2seq LM folder, a hub id, or experts: the zoo's expert LMs "
             "(Retrieval of Experts picks which).")] = "smollm2",
    method: Annotated[str, typer.Option(
        help="direct P(y|I,x), channel P(I,x|y), channel-input P(x|y), flipped P(I|x,y), a,b, or all.")] = "all",
    template: Annotated[Path | None, typer.Option(
        help="YAML template (instruction, input, answer_choices); default: the shipped one for the task.")] = None,
    normalize: Annotated[str, typer.Option(help=f"Per-option score: {', '.join(NORMALIZATIONS)}.")] = "sum",
    calibrate: Annotated[str, typer.Option(help=f"Calibration: {', '.join(CALIBRATIONS)}.")] = "none",
    max_examples: Annotated[int | None, typer.Option(
        help="Score a stratified sample of at most this many test examples.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the test sample (with --max-examples).")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    max_length: Annotated[int | None, typer.Option(
        help="Longest context + option in tokens (the context is cut from the left).")] = None,
    force: Annotated[bool, typer.Option(help="Score again even if the result is stored.")] = False,
    top_k: Annotated[int, typer.Option(
        help="With --model experts: answer with the uniform merge of the top K routed experts.")] = 1,
    experts: ExpertsOption = None,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Classify TASK's test split zero-shot: score each label option with a generative LM, print accuracy and
    macro-F1 per method, and record them (a stored result returns at once)."""
    from ..scoring import score as run_score  # lazy: the scoring stack imports scikit-learn

    use_device(device)
    with Store(db) as store, progress_bars(unit="options") as progress:
        results = run_score(task, model, method=method, template=template, normalize=normalize,
                            calibrate=calibrate, max_examples=max_examples, seed=seed, store=store, device=device,
                            precision=precision, max_length=max_length, force=force, progress=progress,
                            top_k=top_k, experts=split_list(experts))
    first = results[0]
    if first.route is not None:
        print_route(first.route)
    who = first.model
    if first.answered_by:  # routed to the zoo's experts: name them (a merge's folder name says nothing)
        who = " + ".join(first.answered_by) + (f" (merged: {first.model})" if len(first.answered_by) > 1 else "")
    console.print(f"[bold]{escape(who)}[/] on [bold]{escape(first.task)}[/] (test, {first.n} examples, "
                  f"{first.num_options} options), template {escape(first.template)}, normalize {first.normalize}, "
                  f"calibrate {first.calibrate}", highlight=False)
    table = Table()
    for column in ("method", "scores", "accuracy", "macro-F1", "tokens", "seconds", "tokens/s", "device"):
        table.add_column(column, justify="left" if column in ("method", "scores", "device") else "right")
    for result in results:
        table.add_row(result.method, result.formula, f"{result.accuracy:.4f}", f"{result.macro_f1:.4f}",
                      f"{result.tokens:,}", f"{result.seconds:.1f}", f"{result.tokens_per_second:.0f}",
                      escape(result.device) + (" (stored)" if result.cached else ""))
    console.print(table)
    for result in results:
        for note in result.notes:
            console.print(f"note ({result.method}): {escape(note)}", style="yellow", highlight=False)
    if any(r.cached for r in results):
        console.print("stored results: nothing scored again (--force scores again)", style="dim")
    console.print(f"stored in {escape(str(db))}", style="dim", highlight=False)
