"""The ``upcycle`` command line: parse, call the Python API, render with Rich. Nothing else lives here."""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
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
def progress_bars(unit: str = "examples"):
    """A Rich progress display and a ``(phase, done, total)`` callback that drives one bar per phase."""
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


@app.command()
@friendly_errors
def finetune(
    base: Annotated[str, typer.Argument(help="Checkpoint: 'minilm', a local model folder or a hub id org/name.")],
    task: Annotated[str, typer.Argument(help="Dataset folder, CSV/TSV/JSONL/Parquet file or folder, or hub id.")],
    seed: Annotated[int, typer.Option(help="Training seed (head init, batch order, dropout).")] = 0,
    protocol: Annotated[str, typer.Option(help="Preset: quick or paper.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a protocol field: epochs=3.")] = None,
    save: Annotated[Path | None, typer.Option(help="Save the finetuned checkpoint to this folder.")] = None,
    force: Annotated[bool, typer.Option(help="Train again even if the result is stored.")] = False,
    text_column: Annotated[str, typer.Option(help="Text column of a table.")] = "text",
    text_pair_column: Annotated[str | None, typer.Option(help="Second text column (sentence pairs).")] = None,
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
    task: Annotated[str | None, typer.Option(help="Only this task name.")] = None,
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
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    source_task: Annotated[str | None, typer.Option(help="Task it was finetuned on.")] = None,
    base: Annotated[str | None, typer.Option(help="Checkpoint it was finetuned from.")] = None,
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


def _split_list(text: str | None) -> list[str] | None:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


@zoo_app.command("build")
@friendly_errors
def zoo_build(
    sources: Annotated[str, typer.Option(help="Comma-separated source tasks (names in the data dir or paths).")],
    out: Annotated[Path, typer.Option(help="Folder for the experts (one subfolder each).")],
    base: Annotated[str, typer.Option(help="Checkpoint the experts are finetuned from.")] = "minilm",
    protocol: Annotated[str, typer.Option(help="Preset: quick or paper.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a protocol field: max_train=3000.")] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Finetune BASE on each source task and register the results as source experts, with lineage."""
    from .api import build_zoo
    from .protocols import get_protocol, parse_overrides
    from .store import Store

    chosen = get_protocol(protocol, parse_overrides(set_ or []))
    names = _split_list(sources)
    if not names:
        raise UpcycleError("--sources needs at least one task.")
    with Store(db) as store, progress_bars() as progress:
        built = build_zoo(store, base=base, sources=names, out=out, seed=seed, protocol=chosen, progress=progress)
        for entry, result, cached in built:
            how = "already built" if cached else f"trained in {result.train_seconds:.0f}s"
            console.print(f"expert [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]}: {result.metric} "
                          f"{result.score:.4f} on {escape(result.task_name)} test ({how})", highlight=False)


@app.command()
@friendly_errors
def bench(
    suite: Annotated[str, typer.Option(help="recycling, quick, or a YAML file listing targets.")] = "quick",
    seeds: Annotated[int, typer.Option(help="Seeds per (candidate, target).")] = 2,
    base: Annotated[str, typer.Option(help="The vanilla model that gains are measured against.")] = "minilm",
    candidates: Annotated[str | None, typer.Option(
        help="Comma-separated zoo names, fingerprints or paths (default: the whole zoo of the base's arch).")] = None,
    protocol: Annotated[str, typer.Option(help="Preset: quick or paper.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a protocol field: epochs=3.")] = None,
    name: Annotated[str | None, typer.Option(help="Bench name (default SUITE-BASE).")] = None,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start one here).")] = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="Only save the grid and say what is left.")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Finetune every (candidate, target, seed) not stored yet, the vanilla base included; show the leaderboard."""
    from .bench import plan_bench, run_bench
    from .execute import make_executor
    from .protocols import get_protocol, parse_overrides
    from .store import Store

    chosen = get_protocol(protocol, parse_overrides(set_ or []))
    runner = make_executor(executor, address=ray_address)
    with Store(db) as store:
        grid = plan_bench(store, base=base, suite=suite, seeds=seeds, protocol=chosen,
                          candidates=_split_list(candidates), name=name)
        specs = grid.specs()
        todo = len(specs) - len(store.scores([spec.key() for spec in specs]))
        console.print(f"bench [bold]{escape(grid.name)}[/]: {len(grid.candidates)} candidates + base "
                      f"{escape(grid.base.checkpoint.name)} x {len(grid.targets)} targets x {len(grid.seeds)} seeds "
                      f"= {len(specs)} finetunes ({len(specs) - todo} stored, {todo} to run, {executor})",
                      highlight=False)
        if not plan_only and todo:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=errors) as bar:
                job = bar.add_task("grid", total=len(specs), completed=len(specs) - todo)
                for result, done, _ in run_bench(grid, store, runner):
                    bar.update(job, completed=done)
                    bar.console.print(f"{escape(result.base_name)} -> {escape(result.task_name)} seed {result.seed}: "
                                      f"{result.metric} {result.score:.4f}", highlight=False)
        _print_leaderboard(store, grid, "table")


LEADERBOARD_FORMATS = ("table", "csv", "json", "markdown")


def _print_leaderboard(store, grid, fmt: str) -> None:
    from .leaderboard import EXCLUDED, build_leaderboard, to_csv, to_json, to_markdown

    board = build_leaderboard(grid, store)
    if fmt != "table":
        render = {"csv": to_csv, "json": to_json, "markdown": to_markdown}[fmt]
        print(render(board), end="")  # plain stdout: machine-readable, no Rich markup or wrapping
        return
    table = Table(title=f"{grid.name} ({grid.arch}): gain over the vanilla base, points; "
                        f"{board.cells_done}/{board.cells_total} finetunes", title_justify="left")
    for column in ("#", "candidate", "source", "avg gain", "95% CI", "W/L", "worst", "full", *board.targets):
        table.add_column(escape(column), justify="left" if column in ("candidate", "source") else "right")
    for row in board.rows:
        if row["rank"] is None:
            scores = [f"{row['scores'][t]:.1f}" if row["scores"][t] is not None else "" for t in board.targets]
            table.add_row("", escape(row["candidate"]), "", "0", "", "", "", "yes" if row["fully_tested"] else "no",
                          *scores, style="bold")
            continue
        cells = []
        for target in board.targets:
            value = row["gains"][target]
            cells.append("-" if value == EXCLUDED else "" if value is None else
                         f"[{'green' if value > 0 else 'red'}]{value:+.1f}[/]")
        table.add_row(str(row["rank"]), escape(row["candidate"]), escape(row["source_task"] or ""),
                      f"{row['avg_gain']:+.2f}", f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]",
                      f"{row['wins']}/{row['losses']}", f"{row['worst_loss']:+.2f}",
                      "yes" if row["fully_tested"] else "no", *cells)
    console.print(table)
    console.print("base row: absolute scores x100. '-': source data overlaps the target, not counted.", style="dim")
    for problem in board.problems:
        errors.print(f"[yellow]integrity:[/] {escape(problem)}", highlight=False)


@app.command()
@friendly_errors
def leaderboard(
    bench_name: Annotated[str | None, typer.Option("--bench", help="Bench name (default: every bench).")] = None,
    arch: Annotated[str | None, typer.Option(help="Only benches of this architecture key.")] = None,
    format_: Annotated[str, typer.Option("--format", help="table, csv, json or markdown.")] = "table",
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Rank candidates by average gain over the vanilla base, per architecture, from stored results."""
    from .bench import load_bench
    from .store import Store

    if format_ not in LEADERBOARD_FORMATS:
        raise UpcycleError(f"--format must be {', '.join(LEADERBOARD_FORMATS)}; not '{format_}'.")
    with Store(db) as store:
        names = [bench_name] if bench_name else [row[0] for row in store.benches()]
        grids = [load_bench(store, name) for name in names] if names else [load_bench(store)]
        grids = [grid for grid in grids if arch is None or grid.arch == arch]
        if not grids:
            raise UpcycleError(f"No bench for architecture '{arch}'.")
        for grid in grids:
            _print_leaderboard(store, grid, format_)


@app.command("model-card")
@friendly_errors
def model_card(
    checkpoint: Annotated[str, typer.Argument(help="Zoo name, fingerprint prefix or checkpoint folder.")],
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Print a Hugging Face model-index block with the checkpoint's stored results as a starting point."""
    from .bench import resolve_candidate
    from .leaderboard import model_index
    from .store import Store

    with Store(db) as store:
        entry = resolve_candidate(store, checkpoint)
        print(model_index(store, entry.fingerprint, entry.name), end="")


def _analysis_markdown(grid, result: dict) -> str:
    beating, additive = result["beating_base"], result["additive_model"]
    signal, stability = result["single_target_signal"], result["ranking_stability"]
    shuffled = additive["shuffled"]
    lines = [
        f"## Analysis of `{grid.name}` ({grid.arch})",
        "",
        f"- **Beating the base**: {beating['positive_avg_gain']} of {beating['candidates']} candidates have a "
        f"positive average gain; the 95% CI lies above zero for {beating['ci_above_zero']} and below zero for "
        f"{beating['ci_below_zero']}.",
        f"- **Additive model** gain ~ candidate + target over {additive['cells']} cells: R^2 "
        f"{additive['additive']['r2']:.3f} (candidate alone {additive['candidate_only']['r2']:.3f}, target alone "
        f"{additive['target_only']['r2']:.3f}); leave-one-cell-out MSE {additive['additive']['loo_mse']:.2f} "
        f"vs {shuffled['loo_mse_mean']:.2f} +- {shuffled['loo_mse_std']:.2f} with the gains shuffled "
        f"(shuffled R^2 {shuffled['r2_mean']:.3f} +- {shuffled['r2_std']:.3f}); gain variance "
        f"{additive['variance']:.2f}.",
        f"- **One target as a cheap signal**: Spearman between a candidate's gain on one target and its average "
        f"gain on the others: mean {signal['mean']:.2f}, median {signal['median']:.2f}; best target "
        f"{signal['best']} ({signal['per_target'][signal['best']]:.2f}), worst {signal['worst']} "
        f"({signal['per_target'][signal['worst']]:.2f}).",
        *_probe_lines(result.get("linear_probe_signal")),
        "- **Ranking stability** (random subsets of k targets vs all targets):",
        "",
        "| k targets | Kendall tau | same top-1 | top-3 overlap |",
        "|---:|---:|---:|---:|",
        *(f"| {row['targets']} | {row['kendall_tau']:.2f} | {row['top1_agreement']:.2f} | {row['top3_overlap']:.2f} |"
          for row in stability),
    ]
    return "\n".join(lines) + "\n"


def _probe_lines(probe: dict | None) -> list[str]:
    if not probe or "spearman_vs_avg_gain_elsewhere" not in probe:
        return []
    on_target = probe.get("spearman_vs_gain_on_target")
    return [
        f"- **A linear probe as a cheap signal**: logistic regression on frozen mean-pooled features of "
        f"{probe['examples']} {probe['target']} training examples ({probe['candidates']} candidates, "
        f"{probe['seconds']:.0f}s in all): Spearman {probe['spearman_vs_avg_gain_elsewhere']:.2f} with the average "
        f"gain on the other targets" + (f", {on_target:.2f} with the gain on {probe['target']} itself." if
                                         on_target is not None else ".")
    ]


def _analyze(store, grid, probe_target: str | None = None, probe_examples: int = 500) -> dict:
    import time

    from .analysis import analyze as run_analysis
    from .analysis import probe_signal
    from .bench import expected_cells, grid_frame, linear_probes
    from .gains import gain_matrix, summarize

    frame = grid_frame(grid, store)
    if not frame["is_base"].any() or frame["is_base"].all():
        raise UpcycleError(f"Bench '{grid.name}' has no results for both the base and candidates yet.")
    gains = gain_matrix(frame)
    if gains.shape[0] < 3 or gains.shape[1] < 2:
        raise UpcycleError("The analysis needs at least 3 candidates and 2 targets with results.")
    result = run_analysis(summarize(frame, expected_cells(grid)), gains)
    if probe_target is not None:
        started = time.perf_counter()
        probes = linear_probes(grid, probe_target, max_examples=probe_examples)
        names = {c.checkpoint.fingerprint: c.checkpoint.name for c in (grid.base, *grid.candidates)}
        signal = probe_signal(probes, gains, probe_target)
        signal.update(examples=probe_examples, seconds=round(time.perf_counter() - started, 1),
                      accuracy={names[fingerprint]: round(score, 4) for fingerprint, score in probes.items()})
        result["linear_probe_signal"] = signal
    return result


@app.command()
@friendly_errors
def analyze(
    bench_name: Annotated[str | None, typer.Option("--bench", help="Bench name (default: the latest).")] = None,
    format_: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    probe_target: Annotated[str | None, typer.Option(help="Also rank by a linear probe on this task.")] = None,
    probe_examples: Annotated[int, typer.Option(help="Training examples for the probe.")] = 500,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """The recycling study's findings on a bench: who beats the base, additive model, cheap signal, stability."""
    import json

    from .bench import load_bench
    from .store import Store

    if format_ not in ("markdown", "json"):
        raise UpcycleError(f"--format must be markdown or json, not '{format_}'.")
    with Store(db) as store:
        grid = load_bench(store, bench_name)
        result = _analyze(store, grid, probe_target, probe_examples)
    print(json.dumps(result, indent=2) if format_ == "json" else _analysis_markdown(grid, result), end="")


@app.command()
@friendly_errors
def report(
    out: Annotated[Path, typer.Option(help="Folder for the files.")],
    prefix: Annotated[str, typer.Option(help="File name prefix.")],
    bench_name: Annotated[str | None, typer.Option("--bench", help="Bench name (default: the latest).")] = None,
    probe_target: Annotated[str | None, typer.Option(help="Also rank by a linear probe on this task.")] = None,
    probe_examples: Annotated[int, typer.Option(help="Training examples for the probe.")] = 500,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Write a bench's grid (PREFIX.csv), leaderboard (PREFIX_leaderboard.md) and analysis (.md, .json)."""
    import json

    from .bench import grid_frame, load_bench
    from .leaderboard import build_leaderboard, to_markdown
    from .store import Store

    out.mkdir(parents=True, exist_ok=True)
    with Store(db) as store:
        grid = load_bench(store, bench_name)
        frame = grid_frame(grid, store)
        board = build_leaderboard(grid, store)
        result = _analyze(store, grid, probe_target, probe_examples)
    columns = ["candidate", "fingerprint", "target", "seed", "metric", "score"]
    frame.sort_values(["candidate", "target", "seed"])[columns].to_csv(out / f"{prefix}.csv", index=False)
    (out / f"{prefix}_leaderboard.md").write_text(to_markdown(board))
    (out / f"{prefix}_analysis.md").write_text(_analysis_markdown(grid, result))
    (out / f"{prefix}_analysis.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {prefix}.csv ({len(frame)} rows), {prefix}_leaderboard.md and {prefix}_analysis.md/.json "
                  f"to {escape(str(out))}", highlight=False)


@app.command()
@friendly_errors
def estimators() -> None:
    """List the selection estimators (``upcycle select --estimator NAME``)."""
    from .estimators import DEFAULT, REGISTRY

    table = Table(title="selection estimators")
    for column in ("name", "what it measures", "falls back to"):
        table.add_column(column)
    for name, cls in sorted(REGISTRY.items()):
        table.add_row(f"{name} (default)" if name == DEFAULT else name, cls.summary, cls.fallback or "")
    console.print(table)


@app.command()
@friendly_errors
def select(
    target: Annotated[str, typer.Argument(help="Your dataset: CSV/TSV/JSONL/Parquet file or folder, data-dir name or hub id.")],
    candidates: Annotated[str | None, typer.Option(
        help="Comma-separated zoo names, fingerprints or paths (default: every finetuned checkpoint in the zoo).")] = None,
    estimator: Annotated[str | None, typer.Option(
        help="Estimator (see `upcycle estimators`; default logme), or several joined by + for rank fusion.")] = None,
    verify_top: Annotated[int, typer.Option(help="Finetune the top K and the vanilla base on TARGET to check.")] = 0,
    budget: Annotated[float | None, typer.Option(
        help="CPU seconds the estimation may spend per architecture; over it, a cheaper estimator takes over.")] = None,
    examples: Annotated[int, typer.Option(help="Target training examples the estimators read.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the target sample.")] = 0,
    seeds: Annotated[int, typer.Option(help="Seeds per verification finetune.")] = 1,
    protocol: Annotated[str, typer.Option(help="Protocol of the verification finetunes: quick or paper.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a protocol field: epochs=3.")] = None,
    text_column: Annotated[str, typer.Option(help="Text column of a table.")] = "text",
    text_pair_column: Annotated[str | None, typer.Option(help="Second text column (sentence pairs).")] = None,
    label_column: Annotated[str, typer.Option(help="Label column of a table.")] = "label",
    task_type: Annotated[str, typer.Option(help="auto, classification or regression.")] = "auto",
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Rank checkpoints as starting points for TARGET, cheaply; optionally verify the top K by finetuning."""
    import json

    from .estimators import DEFAULT
    from .protocols import parse_overrides
    from .selection import select as run_select
    from .store import Store

    if fmt not in ("table", "json"):
        raise UpcycleError("--format must be table or json.")

    def note(message: str) -> None:
        errors.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    with Store(db) as store, progress_bars() as progress:
        selections = run_select(
            store, target, candidates=_split_list(candidates), estimator=estimator or DEFAULT,
            verify_top=verify_top, budget=budget, examples=examples, seed=seed, seeds=seeds, protocol=protocol,
            overrides=parse_overrides(set_ or []), progress=progress if verify_top else None,
            text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
            task_type=task_type,
        )
    if fmt == "json":
        for message in (m for selection in selections for m in selection.estimate.notes):
            note(message)
        console.print_json(json.dumps([selection.to_dict() for selection in selections]))
        return
    for selection in selections:
        _print_selection(selection, note)


def _print_selection(selection, note) -> None:
    result = selection.estimate
    used = result.used if result.used == result.requested else f"{result.used} (fallback for {result.requested})"
    verified = {v.entry.fingerprint: v for v in selection.verified}
    table = Table(title=f"starting points for {escape(selection.target)} ({escape(selection.arch)})")
    for column in ("rank", "candidate", "source task", f"{used} score"):
        table.add_column(column, justify="right" if column in ("rank",) else "left")
    if verified:
        table.add_column(f"measured {selection.metric}", justify="right")
    for rank, (entry, score) in enumerate(selection.ranking, start=1):
        cells = [str(rank), escape(entry.name), escape(entry.source_task or ""), f"{score:.4f}"]
        if verified:
            cells.append(f"{verified[entry.fingerprint].score:.4f}" if entry.fingerprint in verified else "")
        table.add_row(*cells)
    console.print(table)
    for message in result.notes:
        note(message)
    console.print(f"cost: {result.cpu_seconds:.1f} CPU s for this target"
                  + (f" (+ {result.amortized_seconds:.1f} CPU s on source data, once per candidate)"
                     if result.amortized_seconds else ""), highlight=False)
    best = selection.measured_best
    if best is not None:
        base = next((v for v in selection.verified if v.is_base), None)
        where = "the vanilla base" if best.is_base else f"predicted rank {best.predicted_rank}"
        line = f"measured best: [bold]{escape(best.entry.name)}[/] {selection.metric} {best.score:.4f} ({where})"
        if base is not None and not best.is_base:
            line += f", {100 * (best.score - base.score):+.1f} points over {escape(base.entry.name)}"
        console.print(line, highlight=False)


@app.command("evaluate-selection")
@friendly_errors
def evaluate_selection(
    bench_name: Annotated[str | None, typer.Option("--bench", help="Bench whose grid is the ground truth.")] = None,
    estimators_: Annotated[str | None, typer.Option(
        "--estimators", help="Comma-separated estimators (default: all).")] = None,
    examples: Annotated[int, typer.Option(help="Target training examples the estimators read.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the target samples.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write OUT.md and OUT.json (e.g. benchmarks/results/selection_minilm).")] = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Leave-one-target-out over a bench grid: Regret@1/3/5, NDCG, Spearman, Kendall and cost per estimator."""
    from .bench import load_bench
    from .estimators import DEFAULT, REGISTRY
    from .selection_eval import evaluate_selection as run
    from .selection_eval import results_json, results_markdown, summarize_selection
    from .store import Store

    names = _split_list(estimators_) or sorted(REGISTRY)
    with Store(db) as store:
        grid = load_bench(store, bench_name)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=errors) as bar:
            job = bar.add_task("estimating", total=len(grid.targets) * len(names))
            frame = run(store, grid, names, examples=examples, seed=seed,
                        on_progress=lambda target, name, row: bar.advance(job))
    summary = summarize_selection(frame)
    default = DEFAULT if DEFAULT in names else names[0]
    markdown = results_markdown(frame, summary, default, grid)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(markdown)
        out.with_suffix(".json").write_text(results_json(frame, summary, default))
        console.print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    console.print(markdown, markup=False, highlight=False)


@app.command()
@friendly_errors
def merge(
    config: Annotated[Path, typer.Argument(help="Merge config (YAML; mergekit's schema plus heads/seed/tensor_parameters).")],
    out: Annotated[Path, typer.Argument(help="Output folder (created atomically).")],
    dry_run: Annotated[bool, typer.Option(help="Check the models and print the plan; read and write no tensors.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    shard_mb: Annotated[int, typer.Option(help="Largest output shard, in MiB.")] = 2048,
    register: Annotated[bool, typer.Option(help="Register the merged checkpoint in the zoo (--db).")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Merge checkpoints of one base (linear, task arithmetic, TIES, DARE, SLERP), one tensor at a time."""
    from .merging import describe, execute, load_config, plan_merge

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
        from .api import register as add
        from .store import Store

        with Store(db) as store:
            entry = add(store, checkpoint, name=out.name)  # lineage from the merge's upcycle.json
        console.print(f"registered [bold]{escape(entry.name)}[/] {entry.fingerprint[:12]} in {db}", highlight=False)


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
    merge_method: Annotated[str, typer.Option(help="average, ties, task_arithmetic, dare_ties or dare_linear.")] = (
        "average"),
    merge_set: Annotated[list[str] | None, typer.Option(help="A merge parameter: density=0.5, lambda=1.0.")] = None,
    protocol: Annotated[str, typer.Option(help="Contributors' finetuning preset.")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a contributor protocol field.")] = None,
    eval_protocol: Annotated[str, typer.Option(help="Evaluation finetuning preset.")] = "quick",
    eval_set: Annotated[list[str] | None, typer.Option(help="Override an evaluation protocol field.")] = None,
    rollback: Annotated[bool, typer.Option(help="Reject an iteration whose evaluated gain drops.")] = False,
    tolerance: Annotated[float, typer.Option(help="Points of drop the rollback gate forgives.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seeds the draws and the contributors' finetunes.")] = 0,
    name: Annotated[str | None, typer.Option(help="Run name (zoo names NAME-iterN; default: the --out folder's).")] = None,
    executor: Annotated[str, typer.Option(help="local (a fresh process per contributor) or ray.")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start one here).")] = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """ColD Fusion: contributors finetune the base on their own data, the fused weights become the next base."""
    from pydantic import ValidationError

    from .checkpoints import resolve_checkpoint
    from .execute import make_executor
    from .finetune import CheckpointRef
    from .fusion import (
        Contributor,
        FusionConfig,
        bench_evaluator,
        make_workers,
        run_fusion,
    )
    from .protocols import get_protocol, parse_overrides
    from .store import Store
    from .suites import load_suite

    members = tuple(Contributor.parse(item) for item in _split_list(contributors) or [])
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
        raise UpcycleError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'fuse'}: {e['msg']}"
                                     for e in error.errors())) from None
    workers = make_workers(executor, address=ray_address)
    finetunes = make_executor(executor, address=ray_address)

    def say(message: str) -> None:
        errors.print(escape(message), highlight=False)

    def on_result(result, done: int, total: int) -> None:
        say(f"  eval {result.base_name} -> {result.task_name} seed {result.seed}: {result.metric} "
            f"{result.score:.4f} ({done}/{total})")

    with Store(db) as store:
        evaluate = bench_evaluator(store, finetunes, on_result) if targets else None
        state = run_fusion(config, out, workers, store=store, evaluate=evaluate, log=say)
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


def _print_merge_plan(summary: dict, out: Path) -> None:
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


def main() -> None:  # pragma: no cover - console script entry
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
