"""``upcycle experts build | route | list``: expert LMs, one per task, and Retrieval of Experts for an unseen task.
Answering with them is ``upcycle score TARGET --model experts [--top-k K]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..scoring.experts import (
    DEFAULT_STEPS,
    ENCODER,
    EXPERT_TEXT,
    INDEX_SIZE,
    QUERIES,
    ExpertRoute,
    build_experts,
    list_experts,
    route,
)
from ..store import Store
from .common import (
    DbOption,
    DeviceOption,
    app,
    check_choice,
    console,
    friendly_errors,
    progress_bars,
    split_list,
    use_device,
    warn,
)

experts_app = typer.Typer(help="Expert LMs: one per task, retrieved for an unseen task (Jang et al., 2023).",
                          no_args_is_help=True)
app.add_typer(experts_app, name="experts")

ExpertsOption = Annotated[str | None, typer.Option(
    "--experts", help="Route among these experts (zoo names or fingerprint prefixes, comma-separated); "
                      "default: every expert of the zoo.")]


@experts_app.command("build")
@friendly_errors
def build(
    tasks: Annotated[str, typer.Option(
        help="One expert per task, comma-separated: shared task names, dataset folders or table files.")],
    model: Annotated[str, typer.Option(help="The base: smollm2 (default), a local causal LM folder or a hub id.")]
    = "smollm2",
    out: Annotated[Path, typer.Option(help="Folder the experts are saved in, one subfolder expert-TASK each "
                                           "(an expert already there is reused).")] = Path("runs/experts"),
    lora: Annotated[bool, typer.Option(help="Train LoRA adapters (merged into the weights) or every weight.")]
    = True,
    steps: Annotated[int, typer.Option(help="Optimizer steps per expert.")] = DEFAULT_STEPS,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    learning_rate: Annotated[float | None, typer.Option(
        help="AdamW peak rate (default 1e-4 with LoRA, 1e-5 without).")] = None,
    examples_per_task: Annotated[int, typer.Option(
        help="At most this many train examples per task (a stratified sample).")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the sample, the data order and the initialisation.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Train one expert LM per task (the LM loss on the answer given the task's instruction and input) and register
    each in the zoo with its task, template and base. Rerunning reuses the experts already built."""
    check_choice("--precision", precision, ("fp32", "bf16"))
    use_device(device)
    with Store(db) as store, progress_bars(unit="steps") as progress:
        results = build_experts(model, split_list(tasks) or [], out, lora=lora, steps=steps, batch_size=batch_size,
                                learning_rate=learning_rate, examples_per_task=examples_per_task, seed=seed,
                                device=device, precision=precision, store=store, progress=progress)
    table = Table(title=f"experts from {escape(model)} ({'LoRA' if lora else 'full finetuning'}, {steps} steps)")
    for column in ("expert", "loss", "seconds", ""):
        table.add_column(column, justify="left" if column in ("expert", "") else "right")
    for result in results:
        table.add_row(escape(result.zoo_name or result.checkpoint),
                      f"{result.loss_curve[0]:.3f} -> {result.final_loss:.3f}", f"{result.seconds:.1f}",
                      "reused" if result.reused else "trained")
    console.print(table)
    console.print(f"saved under {escape(str(out))}, registered in {escape(str(db))}", style="dim", highlight=False)


@experts_app.command("route")
@friendly_errors
def route_command(
    target: Annotated[str, typer.Argument(help="The unseen task: a shared task's name, a folder or a table file.")],
    top_k: Annotated[int, typer.Option(help="How many experts to choose (merged when answering).")] = 1,
    experts: ExpertsOption = None,
    queries: Annotated[int, typer.Option(help="Target instances that vote.")] = QUERIES,
    index_size: Annotated[int, typer.Option(help="Training instances indexed per expert.")] = INDEX_SIZE,
    encoder: Annotated[str, typer.Option(help="Sentence encoder of the index (default all-MiniLM-L6-v2).")]
    = ENCODER,
    text_format: Annotated[str, typer.Option(
        help="How an instance is written; fields {choices}, {input}, {instruction}.")] = EXPERT_TEXT,
    template: Annotated[Path | None, typer.Option(help="The target's YAML template (default: the shipped one).")]
    = None,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Retrieval of Experts: TARGET's instances each vote for the expert owning their nearest indexed training
    instance; print the votes and the chosen expert(s). The index is embedded once and kept in the store."""
    use_device(device)
    with Store(db) as store:
        chosen = route(target, store=store, experts=split_list(experts), top_k=top_k, queries=queries,
                       index_size=index_size, encoder=encoder, text_format=text_format, template=template,
                       device=device)
    print_route(chosen)


def print_route(chosen: ExpertRoute) -> None:
    """The votes table and the chosen experts (also used by ``upcycle score --model experts``)."""
    for note in chosen.notes:
        warn(note)
    table = Table(title=f"Retrieval of Experts for {escape(chosen.target)}: {chosen.queries} instances vote "
                        f"({escape(chosen.encoder)})")
    for column in ("rank", "expert", "task", "votes", "share", "mean cosine", ""):
        table.add_column(column, justify="left" if column in ("expert", "task", "") else "right")
    for rank, (expert, votes, similarity) in enumerate(zip(chosen.experts, chosen.votes, chosen.similarity), 1):
        table.add_row(str(rank), escape(expert.name), escape(expert.task), str(votes),
                      f"{votes / chosen.queries:.0%}", f"{similarity:.3f}", "chosen" if rank <= chosen.top_k else "")
    console.print(table)
    names = ", ".join(e.name for e in chosen.chosen)
    how = "answers" if chosen.top_k == 1 else "are merged (uniform average) to answer"
    console.print(f"chosen: [bold]{escape(names)}[/] {how}", highlight=False)


@experts_app.command("list")
@friendly_errors
def list_command(db: DbOption = Path("upcycle.db")) -> None:
    """The zoo's expert LMs: their task, base, training and fingerprint."""
    with Store(db) as store:
        experts = list_experts(store)
        bases = {e.base_fingerprint: store.get_checkpoint(e.base_fingerprint) for e in experts}
    if not experts:
        console.print(f"no expert LMs in {escape(str(db))}; build them with `upcycle experts build --tasks A,B`",
                      highlight=False)
        return
    table = Table(title=f"{len(experts)} expert LMs")
    for column in ("expert", "task", "base", "training", "fingerprint"):
        table.add_column(column)
    for expert in experts:
        base = bases[expert.base_fingerprint]
        table.add_row(escape(expert.name), escape(expert.task),
                      escape(base.name if base else expert.base_fingerprint[:12]),
                      f"{'LoRA' if expert.lora else 'full'}, {expert.steps} steps, seed {expert.seed}",
                      expert.fingerprint[:12])
    console.print(table)
