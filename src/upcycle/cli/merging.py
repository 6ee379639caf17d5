"""``upcycle merge``: combine checkpoints of one base, one tensor at a time (torch imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import UpcycleError
from ..merging import METHODS, load_config
from ..store import Store
from ..zoo import register as add_to_zoo
from .common import DbOption, app, console, errors, friendly_errors, progress_bars


@app.command()
@friendly_errors
def merge(
    config: Annotated[Path, typer.Argument(
        help="Merge config (YAML; mergekit's schema plus heads/seed/tensor_parameters).")],
    out: Annotated[Path, typer.Argument(help="Output folder (created atomically).")],
    dry_run: Annotated[bool, typer.Option(
        help="Check the models and print the plan; read and write no tensors.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    shard_mb: Annotated[int, typer.Option(help="Largest output shard, in MiB.")] = 2048,
    register: Annotated[bool, typer.Option(help="Register the merged checkpoint in the zoo (--db).")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Merge checkpoints of one base (linear, task arithmetic, TIES, DARE, SLERP), one tensor at a time."""
    from ..merging import describe, execute, plan_merge  # lazy: torch

    if shard_mb < 1:
        raise UpcycleError("--shard-mb must be at least 1.")
    plan = plan_merge(load_config(config))
    if dry_run:
        _print_merge_plan(describe(plan, shard_mb << 20), out)
        return
    with progress_bars("tensors") as progress:
        checkpoint = execute(plan, out, overwrite=overwrite, max_shard_bytes=shard_mb << 20,
                             progress=lambda done, total: progress("merging", done, total))
    for note in plan.notes:
        errors.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(f"merged {len(plan.inputs)} model(s) with {plan.config.merge_method} into "
                  f"[bold]{escape(str(checkpoint.path))}[/] ({len(checkpoint.weight_files)} shard(s))", highlight=False)
    if register:
        with Store(db) as store:
            entry = add_to_zoo(store, checkpoint, name=out.name)  # lineage from the merge's upcycle.json
        console.print(f"registered [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]} in {db}", highlight=False)


@app.command("merge-methods")
@friendly_errors
def merge_methods() -> None:
    """List the merge methods (``merge_method:`` in a merge config) and the parameters each reads."""
    table = Table(title="merge methods")
    for column in ("name", "what it computes", "parameters", "needs base_model", "fuse --merge-method"):
        table.add_column(column)
    for name, method in METHODS.items():
        table.add_row(name, method.summary, ", ".join(sorted(method.parameters)), "yes" if method.needs_base else "no",
                      method.fusion_name or "")
    console.print(table)


def _print_merge_plan(summary: dict[str, Any], out: Path) -> None:
    table = Table(title=f"merge plan: {summary['method']} -> {escape(str(out))}")
    for column in ("role", "model", "architecture", "tensors", "MiB"):
        table.add_column(column, justify="right" if column in ("tensors", "MiB") else "left")
    for row in summary["models"]:
        table.add_row(row["role"], escape(row["model"]), f"{row['architecture']} ({row['arch']})", str(row["tensors"]),
                      f"{row['bytes'] / 2**20:.1f}")
    console.print(table)
    output = summary["output"]
    console.print(f"output: {output['architecture']}, {output['tensors']} tensors, {output['dtype']}, "
                  f"{output['bytes'] / 2**20:.1f} MiB in {output['shards']} shard(s); heads {output['heads']}; "
                  f"tokenizer from {escape(output['tokenizer_from'])}; "
                  f"working memory about {summary['working_bytes'] / 2**20:.0f} MiB", highlight=False)
    for group in summary["parameter_groups"]:
        extras = f", t={group['t']}" if group["t"] is not None else ""
        console.print(f"  {group['tensors']:>5} tensors: {group['action']} weights={group['weights']} "
                      f"densities={group['densities']} lambda={group['lambda']} normalize={group['normalize']}{extras}",
                      highlight=False)
    for note in summary["notes"]:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print("dry run: no tensor was read or written.", highlight=False)
