"""``upcycle finetune`` and ``upcycle results``: one recorded finetune, and what the store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..protocols import get_protocol, parse_overrides
from ..store import Store
from ..zoo import finetune as run_finetune
from .common import (
    TASK_TYPES,
    AllowPickleOption,
    DbOption,
    DeviceOption,
    LabelColumnOption,
    ProtocolOption,
    SeedOption,
    SetOption,
    TaskTypeOption,
    TextColumnOption,
    TextPairColumnOption,
    app,
    check_choice,
    console,
    friendly_errors,
    progress_bars,
    use_device,
    warn,
)


@app.command()
@friendly_errors
def finetune(
    base: Annotated[str, typer.Argument(help="Checkpoint: 'minilm', a local model folder or a hub id org/name.")],
    task: Annotated[str, typer.Argument(help="Dataset folder, CSV/TSV/JSONL/Parquet file or folder, or hub id.")],
    seed: SeedOption = 0,
    protocol: ProtocolOption = "quick",
    set_: SetOption = None,
    save: Annotated[Path | None, typer.Option(help="Save the finetuned checkpoint to this folder.")] = None,
    force: Annotated[bool, typer.Option(help="Train again even if the result is stored.")] = False,
    text_column: TextColumnOption = "text",
    text_pair_column: TextPairColumnOption = None,
    label_column: LabelColumnOption = "label",
    task_type: TaskTypeOption = "auto",
    allow_pickle: AllowPickleOption = False,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Finetune BASE on TASK, print test metrics and record them (a stored result returns at once)."""
    use_device(device)
    check_choice("--task-type", task_type, TASK_TYPES)
    chosen = get_protocol(protocol, parse_overrides(set_ or []))  # cheap checks before any data is read
    with Store(db) as store, progress_bars() as progress:
        result, cached = run_finetune(
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
    for note in result.notes:
        warn(note)
    if result.checkpoint_path:
        console.print(f"saved to {escape(result.checkpoint_path)}", highlight=False)
    else:
        console.print("the finetuned weights were not kept: rerun with --save DIR to keep them (the same seed gives "
                      "the same model)", highlight=False)
    console.print(f"key {result.key[:16]}  stored in {escape(str(db))}", style="dim", highlight=False)


@app.command()
@friendly_errors
def results(
    task: Annotated[str | None, typer.Option(
        help="Only this task: its name or a prefix of its fingerprint (8+ characters, the 'task fp' column).")] = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """List stored finetune results, with where each task was loaded from (two tasks may share a name)."""
    with Store(db) as store:
        rows = store.result_rows(task=task)
    table = Table(title=f"{len(rows)} finetune results in {escape(str(db))}")
    for column in ("task", "task fp", "source", "base", "seed", "protocol", "metric", "score", "train ex/s",
                   "created"):
        table.add_column(column, justify="right" if column in ("seed", "score", "train ex/s") else "left")
    for row in rows:
        result = row["result"]
        created = result.created_at[:16].replace("T", " ")
        table.add_row(escape(row["task"]), row["task_fingerprint"][:12], escape(row["task_source"] or ""),
                      escape(row["base"]), str(row["seed"]), escape(row["protocol"]), row["metric"],
                      f"{row['score']:.4f}", f"{result.train_examples_per_s:.1f}", created)
    console.print(table)
