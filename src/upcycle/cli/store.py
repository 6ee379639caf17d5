"""``upcycle store merge``: fold another results database, or an export of one, into this one (e.g. the part of a
grid run on another machine that holds the same checkpoints). ``upcycle store export``: the store as JSON lines, a
text file to commit or send (a grid's results that must outlive the machine it ran on)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import StoreError
from ..store import Store
from .common import DbOption, app, console, errors, friendly_errors

store_app = typer.Typer(help="The results database itself.", no_args_is_help=True)
app.add_typer(store_app, name="store")

SHOWN = 10  # differing cells and skipped rows listed by name; the rest are counted


@store_app.command("merge")
@friendly_errors
def store_merge(
    other: Annotated[Path, typer.Argument(help="Database or export (`upcycle store export`) to copy from (read "
                                                "only, never changed).")],
    db: DbOption = Path("upcycle.db"),
    adopt_rebuilds: Annotated[bool, typer.Option(
        "--adopt-rebuilds", help="Take a checkpoint of OTHER that is not here, but was trained by the same recipe "
        "(base, task data, seed, protocol) as one here, for a build of that one: copy its results as the one "
        "here's, each keeping the fingerprint it ran on. For a grid resumed on another machine, whose rebuilt "
        "experts differ in rounding only.")] = False,
) -> None:
    """Copy every result, zoo entry, task, bench, cached feature and score of OTHER (a database or an export) that
    --db lacks. A result stored in both keeps --db's (its key is what determines it); cells whose scores differ are
    listed."""
    with Store(db) as store:
        summary = store.merge_from(other, adopt_rebuilds=adopt_rebuilds)
    table = Table("table", "copied", "already here", title=f"{escape(str(other))} -> {escape(str(db))}")
    for name, added in summary.added.items():
        table.add_row(name, str(added), str(summary.present[name]))
    console.print(table)
    for title, lines in (("rebuilds adopted", summary.adopted),
                         ("stored in both with different scores (this store's kept)", summary.differing),
                         ("not copied", summary.skipped)):
        if lines:
            errors.print(f"[yellow]{len(lines)} {title}:[/]", highlight=False)
            for line in lines[:SHOWN]:
                errors.print(f"  {escape(line)}", highlight=False)
            if len(lines) > SHOWN:
                errors.print(f"  ... and {len(lines) - SHOWN} more", highlight=False)


@store_app.command("export")
@friendly_errors
def store_export(
    out: Annotated[Path, typer.Argument(help="File to write (JSON lines; replaced whole).")],
    db: DbOption = Path("upcycle.db"),
    features: Annotated[bool, typer.Option("--features", help="Include the estimators' feature cache (large; "
                                                               "recomputed on demand when left out).")] = False,
) -> None:
    """Write --db's results, zoo entries, tasks, benches, imported gains and zero-shot scores to OUT, one row per
    line in key order (a grown store's export differs from the last by added lines; absolute paths are written
    relative to the working directory). `upcycle store merge OUT` reads it back into any store."""
    if not Path(db).is_file():
        raise StoreError(f"{db}: no such database; nothing exported.")
    with Store(db) as store:
        counts = store.export_to(out, features=features)
    table = Table("table", "rows", title=f"{escape(str(db))} -> {escape(str(out))}")
    for name, count in counts.items():
        table.add_row(name, str(count))
    console.print(table)
