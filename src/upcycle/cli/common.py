"""What every command shares: the app, the consoles, one-line errors, progress bars, and the options that several
commands take (declared once here, so ``--db`` or ``--set`` mean the same everywhere)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import __version__
from ..errors import UpcycleError
from ..specs import ProgressCallback
from ..training.devices import DEVICE_VARIABLE, resolve_device

app = typer.Typer(help="Reuse finetuned language models instead of starting from scratch.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
LOG_WIDTH = 10_000  # off a terminal: as wide as the content, so nothing wraps mid-sentence or ends in "..."


def _console(*, stderr: bool) -> Console:
    """Rich as usual on a terminal. In a log, behind ``tee`` or in CI: no wrapping and no truncated names or
    paths (tables take the width of their content)."""
    console = Console(stderr=stderr, soft_wrap=stderr)
    return console if console.is_terminal else Console(stderr=stderr, soft_wrap=True, width=LOG_WIDTH)


console = _console(stderr=False)
errors = _console(stderr=True)

DbOption = Annotated[Path, typer.Option("--db", help="Results database (SQLite).", envvar="UPCYCLE_DB")]
ProtocolOption = Annotated[str, typer.Option(help="Preset: quick, converged or paper.")]
OVERRIDE_METAVAR = "FIELD=VALUE"  # a protocol override, repeatable (list options would read <list[str]> in --help)
MERGE_PARAMETER_METAVAR = "NAME=VALUE"
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar=OVERRIDE_METAVAR, help="Override a protocol field: epochs=3 (repeatable).")]
SeedOption = Annotated[int, typer.Option(help="Training seed (head init, batch order, dropout).")]
BenchOption = Annotated[str | None, typer.Option("--bench", help="Bench name (default: the latest).")]
ExecutorOption = Annotated[str, typer.Option(
    help="local (one job at a time, here), pool (several worker processes; on a GPU several share it) or ray.")]
JobsOption = Annotated[int | None, typer.Option(
    help="Workers of --executor pool (default: one per core on CPU, up to 8 per GPU as its memory allows).")]
GpusPerJobOption = Annotated[float | None, typer.Option(
    help="Share of a GPU each Ray job asks for (0.125 packs 8 per GPU; default 0: the CPU).")]
RayAddressOption = Annotated[str | None, typer.Option(
    help="Ray cluster address, or 'auto' for the last `ray start` here (default: $RAY_ADDRESS, else a new local one).")]
AllowPickleOption = Annotated[bool, typer.Option(help="Allow pickle (.bin) weights. Only for trusted files.")]
ProbeTargetOption = Annotated[str | None, typer.Option(help="Also rank by a linear probe on this task.")]
ProbeExamplesOption = Annotated[int, typer.Option(help="Training examples for the probe.")]
# how a table's columns are read (finetune and select take a user's own file)
TextColumnOption = Annotated[str, typer.Option(help="Text column of a table.")]
TextPairColumnOption = Annotated[str | None, typer.Option(help="Second text column (sentence pairs).")]
LabelColumnOption = Annotated[str, typer.Option(help="Label column of a table.")]
TaskTypeOption = Annotated[str, typer.Option(help="auto, classification or regression.")]
TASK_TYPES = ("auto", "classification", "regression")
DeviceOption = Annotated[str | None, typer.Option(
    help="Where models run: auto (CUDA when there is one), cpu, cuda, cuda:N or mps.", envvar=DEVICE_VARIABLE)]


def use_device(device: str | None) -> str:
    """Check ``--device`` before any work (one clear line if this machine lacks it) and hand it to every worker
    through ``UPCYCLE_DEVICE``; returns the resolved device."""
    resolved = resolve_device(device)
    if device:
        os.environ[DEVICE_VARIABLE] = device
    return resolved


def _print_version(value: bool) -> None:
    if value:
        console.print(f"upcycle {__version__}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """The app's own options (the help text is the Typer app's)."""


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
def progress_bars(unit: str = "examples") -> Iterator[ProgressCallback]:
    """A ``(phase, done, total)`` callback: one Rich bar per phase on a terminal; elsewhere (a log) one line per
    finished phase with its elapsed time, as it finishes."""
    if not errors.is_terminal:
        started: dict[str, float] = {}

        def line(phase: str, done: int, total: int) -> None:
            started.setdefault(phase, time.perf_counter())
            if done >= total:
                errors.print(f"{phase}: {total} {unit} in {time.perf_counter() - started.pop(phase):.1f}s",
                             highlight=False, markup=False)

        yield line
        return
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), console=errors, transient=False,
    ) as progress:
        bars: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(phase, total=total)
            progress.update(bars[phase], completed=done)

        yield update


def counter(description: str, total: int, completed: int = 0, *, eta: bool = True):
    """A one-bar Rich progress display on stderr for a count of jobs; returns ``(progress, task id)``."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    progress = Progress(*columns, *([TimeRemainingColumn()] if eta else []), console=errors)
    return progress, progress.add_task(description, total=total, completed=completed)


def split_list(text: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` for ``option`` unless it is one of ``choices``."""
    if value not in choices:
        raise UpcycleError(f"{option} must be {', '.join(choices[:-1])} or {choices[-1]}, not '{value}'.")


def warn(message: str) -> None:
    errors.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)
