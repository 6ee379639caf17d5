"""``upcycle flip-train``: Flipped Learning meta-training of a causal LM (or the direct baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..scoring.flip_training import DEFAULT_UNLIKELIHOOD_WEIGHT, OBJECTIVES, flip_train
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
)


@app.command("flip-train")
@friendly_errors
def flip_train_command(
    tasks: Annotated[str, typer.Option(
        help="Tasks to meta-train on, comma-separated: shared task names, dataset folders or table files.")],
    out: Annotated[Path, typer.Option(help="Folder the trained model is saved to (a rerun resumes or returns it).")],
    model: Annotated[str, typer.Option(help="smollm2 (default), a local causal LM folder or a hub id.")]
    = "smollm2",
    objective: Annotated[str, typer.Option(
        help="flipped: P(I|x,y) with unlikelihood on wrong labels; direct: P(y|I,x), the baseline.")] = "flipped",
    unlikelihood_weight: Annotated[float, typer.Option(
        help="Weight (lambda) of the unlikelihood term of the flipped objective.")] = DEFAULT_UNLIKELIHOOD_WEIGHT,
    steps: Annotated[int, typer.Option(help="Optimizer steps, cycling over the examples.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    learning_rate: Annotated[float | None, typer.Option(
        help="AdamW peak rate (default 1e-4 with LoRA, 1e-5 without).")] = None,
    lora: Annotated[bool, typer.Option(help="Train LoRA adapters (merged at the end) or every weight.")] = True,
    examples_per_task: Annotated[int, typer.Option(
        help="At most this many train examples per task (a stratified sample).")] = 500,
    max_wrong: Annotated[int, typer.Option(help="Wrong labels per example and step (flipped).")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the sample, the data order and the initialisation.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    max_length: Annotated[int, typer.Option(
        help="Longest context + continuation in tokens (the context is cut from the left).")] = 512,
    save_every: Annotated[int, typer.Option(help="Save a resume state every this many steps.")] = 50,
    name: Annotated[str | None, typer.Option(help="Zoo name of the result (default: the folder's name).")] = None,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Meta-train a causal LM on --tasks with Flipped Learning (Ye et al., 2023): learn to generate each task's
    instruction given the input and the right label, and not given a wrong one. Saves an ordinary model folder that
    'upcycle score --method flipped' reads, and registers it in the zoo."""
    check_choice("--objective", objective, OBJECTIVES)
    check_choice("--precision", precision, ("fp32", "bf16"))
    use_device(device)
    names = split_list(tasks) or []
    with Store(db) as store, progress_bars(unit="steps") as progress:
        result = flip_train(model, names, out, objective=objective, unlikelihood_weight=unlikelihood_weight,
                            steps=steps, batch_size=batch_size, learning_rate=learning_rate, lora=lora,
                            examples_per_task=examples_per_task, max_wrong=max_wrong, seed=seed, device=device,
                            precision=precision, max_length=max_length, save_every=save_every, store=store,
                            name=name, progress=progress)
    console.print(f"[bold]{escape(model)}[/] meta-trained ({result.objective}) on [bold]{escape(', '.join(names))}"
                  f"[/], {result.steps} steps", highlight=False)
    if result.reused:
        console.print("already trained with these arguments: nothing trained (remove the folder to train again)",
                      style="dim")
    elif result.resumed_from is not None:
        console.print(f"resumed from step {result.resumed_from}", style="dim")
    console.print(f"loss {result.loss_curve[0]:.4f} -> {result.final_loss:.4f} (mean of the last steps); "
                  f"{result.seconds:.1f}s, {result.tokens:,} tokens ({result.tokens_per_second:.0f} tokens/s)",
                  highlight=False)
    console.print(f"saved to {escape(result.checkpoint)}", highlight=False)
    console.print(f"zoo name {escape(result.zoo_name or '')}, stored in {escape(str(db))}", style="dim",
                  highlight=False)
