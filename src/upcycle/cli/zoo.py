"""``upcycle zoo add | list | build``: register checkpoints with their lineage, list them, build experts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..checkpoints import CheckpointRef, resolve_checkpoint
from ..errors import UpcycleError
from ..execute import make_executor
from ..protocols import get_protocol, parse_overrides
from ..store import Store
from ..zoo import build_zoo
from ..zoo import zoo_add as add_to_zoo
from ..zoo import zoo_remove as remove_from_zoo
from ..zoo import zoo_rename as rename_in_zoo
from .common import (
    AllowPickleOption,
    DbOption,
    DeviceOption,
    ExecutorOption,
    GpusPerJobOption,
    JobsOption,
    ProtocolOption,
    RayAddressOption,
    SetOption,
    app,
    console,
    friendly_errors,
    progress_bars,
    split_list,
    use_device,
)

zoo_app = typer.Typer(help="Register and list checkpoints (the zoo).", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("add")
@friendly_errors
def zoo_add(
    path: Annotated[str, typer.Argument(help="Checkpoint folder (or alias / hub id).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    source_task: Annotated[str | None, typer.Option(help="Task it was finetuned on.")] = None,
    base: Annotated[str | None, typer.Option(help="Checkpoint it was finetuned from.")] = None,
    rename: Annotated[bool, typer.Option(help="If it is registered already, give it --name.")] = False,
    allow_pickle: AllowPickleOption = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Register a checkpoint with its lineage (names are unique; a registered checkpoint keeps its name)."""
    with Store(db) as store:
        known = {entry.fingerprint for entry in store.checkpoints()}
        entry = add_to_zoo(store, path, name=name, source_task=source_task, base=base, allow_pickle=allow_pickle,
                           rename=rename)
    if entry.fingerprint in known and name is not None and entry.name != name:
        console.print(f"already registered as [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]}; name kept "
                      "(--rename gives it the new one)", highlight=False)
        return
    console.print(f"registered [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]} ({entry.arch}) "
                  f"at {escape(entry.path)}", highlight=False)


@zoo_app.command("rename")
@friendly_errors
def zoo_rename(
    old: Annotated[str, typer.Argument(help="Zoo name or fingerprint prefix.")],
    new: Annotated[str, typer.Argument(help="The new, unique name.")],
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Rename a zoo checkpoint."""
    with Store(db) as store:
        entry = rename_in_zoo(store, old, new)
    console.print(f"renamed {escape(old)} to [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]}", highlight=False)


@zoo_app.command("remove")
@friendly_errors
def zoo_remove(
    name: Annotated[str, typer.Argument(help="Zoo name or fingerprint prefix.")],
    delete_files: Annotated[bool, typer.Option(help="Also delete the checkpoint's folder.")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Take a checkpoint out of the zoo (its stored results stay; its files stay unless --delete-files)."""
    with Store(db) as store:
        entry = remove_from_zoo(store, name, delete_files=delete_files)
    kept = "deleted" if delete_files else "kept"
    console.print(f"removed [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]} from the zoo; its folder "
                  f"{escape(entry.path)} is {kept}", highlight=False)


@zoo_app.command("list")
@friendly_errors
def zoo_list(db: DbOption = Path("upcycle.db")) -> None:
    """List registered checkpoints, grouped by architecture, with lineage."""
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


@zoo_app.command("build")
@friendly_errors
def zoo_build(
    sources: Annotated[str, typer.Option(help="Comma-separated source tasks (names in the data dir or paths).")],
    out: Annotated[Path, typer.Option(help="Folder for the experts (one subfolder each).")],
    base: Annotated[str, typer.Option(help="Checkpoint the experts are finetuned from.")] = "minilm",
    protocol: ProtocolOption = "quick",
    set_: SetOption = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    executor: ExecutorOption = "local",
    jobs: JobsOption = None,
    gpus_per_job: GpusPerJobOption = None,
    ray_address: RayAddressOption = None,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Finetune BASE on each source task and register the results as source experts, with lineage."""
    use_device(device)
    chosen = get_protocol(protocol, parse_overrides(set_ or []))
    names = split_list(sources)
    if not names:
        raise UpcycleError("--sources needs at least one task.")
    runner = None
    if executor != "local" or jobs is not None or gpus_per_job is not None or ray_address is not None:
        runner = make_executor(executor, address=ray_address, jobs=jobs, gpus_per_job=gpus_per_job,
                               model_bytes=CheckpointRef.of(resolve_checkpoint(base)).weights_bytes)
    with Store(db) as store, progress_bars() as progress:
        built = build_zoo(store, base=base, sources=names, out=out, seed=seed, protocol=chosen, progress=progress,
                          executor=runner)
        for entry, result, cached in built:
            how = "already built" if cached else f"trained in {result.train_seconds:.0f}s"
            console.print(f"expert [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]}: {result.metric} "
                          f"{result.score:.4f} on {escape(result.task_name)} test ({how})", highlight=False)
