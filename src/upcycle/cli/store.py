"""``upcycle store merge``: fold another results database into this one (e.g. the part of a grid run on another
machine that holds the same checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..store import Store
from .common import DbOption, app, console, errors, friendly_errors

store_app = typer.Typer(help="The results database itself.", no_args_is_help=True)
app.add_typer(store_app, name="store")

SHOWN = 10  # differing cells and skipped rows listed by name; the rest are counted


@store_app.command("merge")
@friendly_errors
def store_merge(
    other: Annotated[Path, typer.Argument(help="Database to copy from (read only, never changed).")],
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Copy every result, zoo entry, task, bench, cached feature and score of OTHER that --db lacks. A result
    stored in both keeps --db's (its key is what determines it); cells whose scores differ are listed."""
    with Store(db) as store:
        summary = store.merge_from(other)
    table = Table("table", "copied", "already here", title=f"{escape(str(other))} -> {escape(str(db))}")
    for name, added in summary.added.items():
        table.add_row(name, str(added), str(summary.present[name]))
    console.print(table)
    for title, lines in (("stored in both with different scores (this store's kept)", summary.differing),
                         ("not copied", summary.skipped)):
        if lines:
            errors.print(f"[yellow]{len(lines)} {title}:[/]", highlight=False)
            for line in lines[:SHOWN]:
                errors.print(f"  {escape(line)}", highlight=False)
            if len(lines) > SHOWN:
                errors.print(f"  ... and {len(lines) - SHOWN} more", highlight=False)
