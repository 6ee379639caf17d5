"""``upcycle fuse``: ColD Fusion over contributors that each keep their data (torch imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from ..checkpoints import CheckpointRef, resolve_checkpoint
from ..errors import UpcycleError, validation_problems
from ..execute import make_executor
from ..merging.methods import FUSION_METHODS
from ..protocols import get_protocol, parse_overrides
from ..specs import FinetuneResult
from ..store import Store
from ..tasks import load_suite
from .common import (
    MERGE_PARAMETER_METAVAR,
    OVERRIDE_METAVAR,
    DbOption,
    DeviceOption,
    ExecutorOption,
    GpusPerJobOption,
    JobsOption,
    RayAddressOption,
    app,
    console,
    errors,
    friendly_errors,
    split_list,
    use_device,
)

FUSION_METHOD_NAMES = ", ".join(sorted(FUSION_METHODS))


@app.command()
@friendly_errors
def fuse(
    contributors: Annotated[str, typer.Option(
        help="Comma-separated contributors: task names in the data dir, paths, or NAME=PATH. Only their workers "
             "open the data.")],
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, fusion.json); rerun to resume.")] = Path(
        "runs/fusion"),
    base: Annotated[str, typer.Option(help="The model to improve (and to measure gains against).")] = "minilm",
    iterations: Annotated[int, typer.Option(help="Fusion iterations.")] = 5,
    per_iteration: Annotated[int | None, typer.Option(help="Contributors drawn per iteration (default all).")] = None,
    eval_suite: Annotated[str | None, typer.Option(
        help="Held-out targets: a suite name or YAML (none of them may be a contributor's task).")] = None,
    eval_every: Annotated[int, typer.Option(help="Evaluate every E iterations (and the last).")] = 1,
    eval_seeds: Annotated[int, typer.Option(help="Seeds per evaluation target.")] = 2,
    merge_method: Annotated[str, typer.Option(help=f"One of {FUSION_METHOD_NAMES} (average is linear).")] = (
        "average"),
    merge_set: Annotated[list[str] | None, typer.Option(
        metavar=MERGE_PARAMETER_METAVAR, help="A merge parameter: density=0.5, lambda=1.0 (repeatable).")] = None,
    protocol: Annotated[str, typer.Option(help="Contributors' finetuning preset.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar=OVERRIDE_METAVAR,
        help="Override a contributor protocol field: epochs=3 (repeatable).")] = None,
    eval_protocol: Annotated[str, typer.Option(help="Evaluation finetuning preset.")] = "quick",
    eval_set: Annotated[list[str] | None, typer.Option(
        metavar=OVERRIDE_METAVAR, help="Override an evaluation protocol field: epochs=3 (repeatable).")] = None,
    rollback: Annotated[bool, typer.Option(help="Reject an iteration whose evaluated gain drops.")] = False,
    tolerance: Annotated[float, typer.Option(help="Points of drop the rollback gate forgives.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seeds the draws and the contributors' finetunes.")] = 0,
    name: Annotated[str | None, typer.Option(
        help="Run name (zoo names NAME-iterN; default: the --out folder's).")] = None,
    executor: ExecutorOption = "local",
    jobs: JobsOption = None,
    gpus_per_job: GpusPerJobOption = None,
    ray_address: RayAddressOption = None,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """ColD Fusion: contributors finetune the base on their own data, the fused weights become the next base.

    With ``--executor local`` every contributor trains in a fresh process of its own; ``--executor pool`` runs
    ``--jobs`` of them at once (each still in a fresh process).
    """
    from ..fusion import Contributor, FusionConfig, bench_evaluator, run_fusion  # lazy: torch

    use_device(device)
    members = tuple(Contributor.parse(item) for item in split_list(contributors) or [])
    vanilla = resolve_checkpoint(base)
    targets = load_suite(eval_suite).targets if eval_suite else ()
    try:
        parameters = {key: float(value) for key, value in parse_overrides(merge_set or []).items()}
    except (TypeError, ValueError):
        raise UpcycleError(f"--merge-set takes numbers (density=0.5, lambda=1.0), got {merge_set}.") from None
    try:
        config = FusionConfig(
            name=name or out.name, base=CheckpointRef.of(vanilla), contributors=members, iterations=iterations,
            per_iteration=per_iteration or len(members), seed=seed,
            protocol=get_protocol(protocol, parse_overrides(set_ or [])), merge_method=merge_method,
            merge_parameters=parameters, eval_targets=targets, eval_every=eval_every, eval_seeds=eval_seeds,
            eval_protocol=get_protocol(eval_protocol, parse_overrides(eval_set or [])), rollback=rollback,
            tolerance=tolerance)
    except ValidationError as error:
        raise UpcycleError(validation_problems(error, "fuse")) from None
    size = config.base.weights_bytes
    contributions = make_executor(executor, address=ray_address, isolate=True, jobs=jobs, gpus_per_job=gpus_per_job,
                                  model_bytes=size)
    finetunes = make_executor(executor, address=ray_address, jobs=jobs, gpus_per_job=gpus_per_job, model_bytes=size)

    def say(message: str) -> None:
        errors.print(escape(message), highlight=False)

    def on_result(result: FinetuneResult, done: int, total: int) -> None:
        say(f"  eval {result.base_name} -> {result.task_name} seed {result.seed}: {result.metric} "
            f"{result.score:.4f} ({done}/{total})")

    with Store(db) as store:
        evaluate = bench_evaluator(store, finetunes, on_result) if targets else None
        state = run_fusion(config, out, contributions, store=store, evaluate=evaluate, log=say)
    table = Table(title=f"fusion {escape(config.name)}: gain of each fused base over {escape(vanilla.name)}, points",
                  title_justify="left")
    for column in ("iteration", "contributors", "fused", "avg gain", "95% CI", "kept"):
        table.add_column(column, justify="right" if column in ("iteration", "avg gain") else "left")
    for record in state.iterations:
        gain = "" if record.avg_gain is None else f"{record.avg_gain:+.2f}"
        interval = "" if record.ci_low is None else f"[{record.ci_low:+.2f}, {record.ci_high:+.2f}]"
        table.add_row(str(record.iteration), escape(", ".join(record.contributors)), record.fused_fingerprint[:12],
                      gain, interval, "yes" if record.accepted else "rolled back")
    console.print(table)
    path, _ = state.current_base()
    console.print(f"current base: [bold]{escape(path)}[/]", highlight=False)
