"""The ``upcycle`` command line: parse, call the Python API, render with Rich. Nothing else lives here."""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import UpcycleError

app = typer.Typer(help="Reuse finetuned language models instead of starting from scratch.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
zoo_app = typer.Typer(help="Register and list checkpoints (the zoo).", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
console = Console()
errors = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[Path, typer.Option("--db", help="Results database (SQLite).", envvar="UPCYCLE_DB")]


def friendly_errors(command):
    """Print an UpcycleError as one red line and exit 2; never a traceback for bad input."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UpcycleError as error:
            errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@contextmanager
def progress_bars():
    """A Rich progress display and a ``(phase, done, total)`` callback that drives one bar per phase."""
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TextColumn("examples"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=errors, transient=False,
    ) as progress:
        bars: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(phase, total=total)
            progress.update(bars[phase], completed=done)

        yield update


@app.command()
@friendly_errors
def finetune(
    base: Annotated[str, typer.Argument(help="Checkpoint: 'minilm', a local model folder or a hub id org/name.")],
    task: Annotated[str, typer.Argument(help="Dataset folder, CSV/TSV/JSONL/Parquet file or folder, or hub id.")],
    seed: Annotated[int, typer.Option(help="Training seed (head init, batch order, dropout).")] = 0,
    protocol: Annotated[str, typer.Option(help="Preset: quick or paper.")] = "quick",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a protocol field: epochs=3.")] = None,
    save: Annotated[Optional[Path], typer.Option(help="Save the finetuned checkpoint to this folder.")] = None,
    force: Annotated[bool, typer.Option(help="Train again even if the result is stored.")] = False,
    text_column: Annotated[str, typer.Option(help="Text column of a table.")] = "text",
    text_pair_column: Annotated[Optional[str], typer.Option(help="Second text column (sentence pairs).")] = None,
    label_column: Annotated[str, typer.Option(help="Label column of a table.")] = "label",
    task_type: Annotated[str, typer.Option(help="auto, classification or regression.")] = "auto",
    allow_pickle: Annotated[bool, typer.Option(help="Allow pickle (.bin) weights. Only for trusted files.")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Finetune BASE on TASK, print test metrics and record them (a stored result returns at once)."""
    from .api import finetune as run
    from .protocols import get_protocol, parse_overrides
    from .store import Store

    if task_type not in ("auto", "classification", "regression"):
        raise UpcycleError(f"--task-type must be auto, classification or regression, not '{task_type}'.")
    chosen = get_protocol(protocol, parse_overrides(set_ or []))  # cheap checks before any data is read
    with Store(db) as store, progress_bars() as progress:
        result, cached = run(
            base, task, seed=seed, protocol=chosen, store=store,
            force=force, save=save, allow_pickle=allow_pickle, progress=progress, text_column=text_column,
            text_pair_column=text_pair_column, label_column=label_column, task_type=task_type,
        )
    console.print(f"[bold]{escape(result.base_name)}[/] on [bold]{escape(result.task_name)}[/], "
                  f"seed {result.seed}, protocol {escape(result.protocol)}", highlight=False)
    if cached:
        console.print("from the store: nothing trained (--force trains again)", style="dim")
    table = Table()
    table.add_column("metric")
    table.add_column("test", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(
        f"train {result.n_train} examples x {result.epochs_run} epochs in {result.train_seconds:.1f}s "
        f"({result.train_examples_per_s:.1f} ex/s); test {result.n_test} in {result.eval_seconds:.1f}s "
        f"({result.eval_examples_per_s:.1f} ex/s, {result.eval_precision})", highlight=False,
    )
    if result.checkpoint_path:
        console.print(f"saved to {escape(result.checkpoint_path)}", highlight=False)
    console.print(f"key {result.key[:16]}  stored in {escape(str(db))}", style="dim", highlight=False)


@app.command()
@friendly_errors
def results(
    task: Annotated[Optional[str], typer.Option(help="Only this task name.")] = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """List stored finetune results."""
    from .store import Store

    with Store(db) as store:
        rows = [row for row in store.result_rows() if task is None or row["task"] == task]
    table = Table(title=f"{len(rows)} finetune results in {db}")
    for column in ("task", "base", "seed", "protocol", "metric", "score", "train ex/s", "created"):
        table.add_column(column, justify="right" if column in ("seed", "score", "train ex/s") else "left")
    for row in rows:
        result = row["result"]
        created = result.created_at[:16].replace("T", " ")
        table.add_row(escape(row["task"]), escape(row["base"]), str(row["seed"]), escape(row["protocol"]),
                      row["metric"], f"{row['score']:.4f}", f"{result.train_examples_per_s:.1f}", created)
    console.print(table)


@zoo_app.command("add")
@friendly_errors
def zoo_add(
    path: Annotated[str, typer.Argument(help="Checkpoint folder (or alias / hub id).")],
    name: Annotated[Optional[str], typer.Option(help="Display name.")] = None,
    source_task: Annotated[Optional[str], typer.Option(help="Task it was finetuned on.")] = None,
    base: Annotated[Optional[str], typer.Option(help="Checkpoint it was finetuned from.")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Allow pickle (.bin) weights. Only for trusted files.")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Register a checkpoint with its lineage."""
    from .api import zoo_add as add
    from .store import Store

    with Store(db) as store:
        entry = add(store, path, name=name, source_task=source_task, base=base, allow_pickle=allow_pickle)
    console.print(f"registered [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]} ({entry.arch})")


@zoo_app.command("list")
@friendly_errors
def zoo_list(db: DbOption = Path("upcycle.db")) -> None:
    """List registered checkpoints, grouped by architecture, with lineage."""
    from .store import Store

    with Store(db) as store:
        entries = store.checkpoints()
        names = {entry.fingerprint: entry.name for entry in entries}
    table = Table(title=f"{len(entries)} checkpoints in {db}")
    for column in ("name", "fingerprint", "arch", "source task", "base", "path"):
        table.add_column(column)
    for entry in entries:
        base = names.get(entry.base_fingerprint or "", (entry.base_fingerprint or "")[:12])
        cells = (entry.name, entry.fingerprint[:12], entry.arch, entry.source_task or "", base, entry.path)
        table.add_row(*map(escape, cells))
    console.print(table)


def main() -> None:  # pragma: no cover - console script entry
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
