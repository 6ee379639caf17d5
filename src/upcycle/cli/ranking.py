"""``upcycle bench | leaderboard | model-card | analyze | report``: the recycling grid and its views.

pandas (and with it the ranking and report packages) is imported inside the commands, off the ``--help`` path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import UpcycleError
from ..execute import make_executor
from ..protocols import get_protocol, parse_overrides
from ..store import Store
from ..zoo import resolve_candidate
from .common import (
    BenchOption,
    DbOption,
    DeviceOption,
    ExecutorOption,
    GpusPerJobOption,
    JobsOption,
    ProbeExamplesOption,
    ProbeTargetOption,
    ProtocolOption,
    RayAddressOption,
    SetOption,
    app,
    check_choice,
    console,
    counter,
    errors,
    friendly_errors,
    split_list,
    use_device,
    warn,
)


def _print_leaderboard(store: Store, grid, fmt: str) -> None:
    from ..ranking import build_leaderboard  # lazy: pandas
    from ..report.leaderboard import TABLE_NOTE, to_csv, to_json, to_markdown, to_table  # lazy: pandas

    board = build_leaderboard(grid, store)
    if fmt != "table":
        render = {"csv": to_csv, "json": to_json, "markdown": to_markdown}[fmt]
        print(render(board), end="")  # plain stdout: machine-readable, no Rich markup or wrapping
        return
    console.print(to_table(board))
    console.print(TABLE_NOTE, style="dim")
    for problem in board.problems:
        errors.print(f"[yellow]integrity:[/] {escape(problem)}", highlight=False)


@app.command()
@friendly_errors
def bench(
    suite: Annotated[str, typer.Option(help="recycling, quick, or a YAML file listing targets.")] = "quick",
    seeds: Annotated[int, typer.Option(help="Seeds per (candidate, target).")] = 2,
    base: Annotated[str, typer.Option(help="The vanilla model that gains are measured against.")] = "minilm",
    candidates: Annotated[str | None, typer.Option(
        help="Comma-separated zoo names, fingerprints or paths (default: the whole zoo of the base's arch).")] = None,
    protocol: ProtocolOption = "quick",
    set_: SetOption = None,
    name: Annotated[str | None, typer.Option(help="Bench name (default SUITE-BASE).")] = None,
    executor: ExecutorOption = "local",
    jobs: JobsOption = None,
    gpus_per_job: GpusPerJobOption = None,
    ray_address: RayAddressOption = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="Only save the grid and say what is left.")] = False,
    device: DeviceOption = None,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Finetune every (candidate, target, seed) not stored yet, the vanilla base included; show the leaderboard."""
    from ..ranking import plan_bench, run_bench  # lazy: pandas

    use_device(device)
    chosen = get_protocol(protocol, parse_overrides(set_ or []))
    with Store(db) as store:
        grid = plan_bench(store, base=base, suite=suite, seeds=seeds, protocol=chosen,
                          candidates=split_list(candidates), name=name)
        specs = grid.specs()
        runner = make_executor(executor, address=ray_address, jobs=jobs, gpus_per_job=gpus_per_job,
                               model_bytes=max(spec.base.weights_bytes for spec in specs))
        todo = len(specs) - len(store.scores([spec.key() for spec in specs]))
        console.print(f"bench [bold]{escape(grid.name)}[/]: {len(grid.candidates)} candidates + base "
                      f"{escape(grid.base.checkpoint.name)} x {len(grid.targets)} targets x {len(grid.seeds)} seeds "
                      f"= {len(specs)} finetunes ({len(specs) - todo} stored, {todo} to run, {executor})",
                      highlight=False)
        if chosen.name.rstrip("+") == "quick":
            warn("the quick protocol trains each finetune briefly: on the committed MiniLM grid it leaves the vanilla "
                 "base 23.5 points short of a long run on average, so these gains are partly how fast a head is "
                 "learned on an undertrained base. For a leaderboard to rely on: --protocol converged.")
        if not plan_only and todo:
            bar, job = counter("grid", len(specs), len(specs) - todo)
            with bar:
                for result, done, _ in run_bench(grid, store, runner):
                    bar.update(job, completed=done)
                    bar.console.print(f"{escape(result.base_name)} -> {escape(result.task_name)} seed {result.seed}: "
                                      f"{result.metric} {result.score:.4f}", highlight=False)
        _print_leaderboard(store, grid, "table")


leaderboard_app = typer.Typer(
    help="Rank candidates by average gain over the vanilla base; export and import leaderboards as gains files.")
app.add_typer(leaderboard_app, name="leaderboard")


@leaderboard_app.callback(invoke_without_command=True)
@friendly_errors
def leaderboard(
    ctx: typer.Context,
    bench_name: Annotated[str | None, typer.Option("--bench", help="Bench name (default: every bench).")] = None,
    arch: Annotated[str | None, typer.Option(help="Only benches of this architecture key.")] = None,
    format_: Annotated[str, typer.Option("--format", help="table, csv, json or markdown.")] = "table",
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Rank candidates by average gain over the vanilla base, per architecture, from stored results."""
    if ctx.invoked_subcommand is not None:
        return
    from ..ranking import load_bench  # lazy: pandas
    from ..report.leaderboard import FORMATS  # lazy: pandas

    check_choice("--format", format_, FORMATS)
    with Store(db) as store:
        names = [bench_name] if bench_name else [row[0] for row in store.benches()]
        grids = [load_bench(store, name) for name in names] if names else [load_bench(store)]
        grids = [grid for grid in grids if arch is None or grid.arch == arch]
        if not grids:
            raise UpcycleError(f"No bench for architecture '{arch}'.")
        for grid in grids:
            _print_leaderboard(store, grid, format_)


@leaderboard_app.command("export")
@friendly_errors
def leaderboard_export(
    out: Annotated[Path, typer.Option(help="The gains file to write (JSON).")],
    bench_name: BenchOption = None,
    source: Annotated[str | None, typer.Option(
        help="Who measured these numbers and how (default: the bench's name, protocol and seeds).")] = None,
    license_: Annotated[str, typer.Option("--license", help="Under which terms the numbers may be used.")]
    = "unspecified",
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Write a stored bench's leaderboard as a portable gains file (gains per candidate and target, in points)."""
    from ..ranking import load_bench  # lazy: pandas
    from ..ranking.gainsfile import export_bench  # lazy: pandas
    from ..report.files import write_atomic  # lazy: the report package imports pandas

    with Store(db) as store:
        document = export_bench(store, load_bench(store, bench_name), source=source, license=license_)
    write_atomic(out, document.to_json())
    [gain_set] = document.sets
    console.print(f"wrote {escape(str(out))}: {len(gain_set.candidates)} candidates x {len(gain_set.targets)} "
                  f"targets over base {escape(gain_set.base.name)} ({escape(gain_set.arch)})", highlight=False)


@leaderboard_app.command("import")
@friendly_errors
def leaderboard_import(
    file: Annotated[Path, typer.Argument(
        help="A gains file (upcycle leaderboard export), or a published model-recycling <base>_table.csv "
             "(with --base-runs).")],
    base_runs: Annotated[Path | None, typer.Option(
        help="For a published model-recycling table: the base's models_results_<base>_pretrain.csv (the base "
             "score per target is the mean of its runs).")] = None,
    base: Annotated[str | None, typer.Option(
        help="Published table: the base's name (default: from the file name).")] = None,
    arch: Annotated[str | None, typer.Option(
        help="Published table: the base's architecture key (known for the four published bases).")] = None,
    min_correlation: Annotated[float, typer.Option(
        help="Published table: exclude rows whose score profile correlates below this with the base's.")] = 0.9,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Import gains into the store (replacing an earlier import of the same source) for the prior estimator.

    `select --estimator prior` then uses them for the zoo candidates they know (by fingerprint, hub id, or name
    with the same base). A published table is screened first: rows excluded are counted by reason."""
    from ..ranking.gainsfile import import_gains, read_gains  # lazy: pandas
    from ..ranking.published import REASONS, import_published  # lazy: pandas

    if file.suffix.lower() == ".csv" and base_runs is None:
        raise UpcycleError(f"{file}: a published model-recycling table needs the base's runs: --base-runs "
                           "models_results_<base>_pretrain.csv.")
    if base_runs is not None:
        document, _ = import_published(file, base_runs, base_name=base, arch=arch, min_correlation=min_correlation)
    else:
        if base is not None or arch is not None:
            raise UpcycleError("--base and --arch are for a published table (with --base-runs); a gains file names "
                               "its base and architecture itself.")
        document = read_gains(file)
    with Store(db) as store:
        summary = import_gains(store, document)
    console.print(f"imported {escape(summary.source)}" + (f" (replacing {summary.replaced} earlier sets)"
                                                          if summary.replaced else ""), highlight=False)
    for key, candidates, targets in summary.sets:
        console.print(f"  {escape(key)}: {candidates} candidates x {targets} targets", highlight=False)
    reasons = [f"{summary.excluded[r]} {r}" for r in (*REASONS, *sorted(set(summary.excluded) - set(REASONS)))
               if summary.excluded.get(r)]
    console.print(f"  excluded rows: {sum(summary.excluded.values())}" + (f" ({', '.join(reasons)})" if reasons
                                                                           else ""), highlight=False)
    if base_runs is not None:
        console.print(f"  {escape(document.description)}", highlight=False)


@app.command("model-card")
@friendly_errors
def model_card(
    checkpoint: Annotated[str, typer.Argument(help="Zoo name, fingerprint prefix or checkpoint folder.")],
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Print a Hugging Face model-index block with the checkpoint's stored results as a starting point."""
    from ..report.model_card import model_index  # lazy: pandas

    with Store(db) as store:
        entry = resolve_candidate(store, checkpoint)
        print(model_index(store, entry.fingerprint, entry.name), end="")


@app.command()
@friendly_errors
def analyze(
    bench_name: BenchOption = None,
    format_: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    probe_target: ProbeTargetOption = None,
    probe_examples: ProbeExamplesOption = 500,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """The recycling study's findings on a bench: who beats the base, additive model, cheap signal, stability."""
    from ..ranking import load_bench  # lazy: pandas
    from ..report import analyze as run_analysis  # lazy: pandas
    from ..report.bench import analysis_markdown  # lazy: pandas

    check_choice("--format", format_, ("markdown", "json"))
    with Store(db) as store:
        grid = load_bench(store, bench_name)
        result = run_analysis(store, grid, probe_target=probe_target, probe_examples=probe_examples)
    print(json.dumps(result, indent=2) if format_ == "json" else analysis_markdown(grid, result), end="")


@app.command()
@friendly_errors
def report(
    out: Annotated[Path, typer.Option(help="Folder for the files.")],
    prefix: Annotated[str, typer.Option(help="File name prefix.")],
    bench_name: BenchOption = None,
    probe_target: ProbeTargetOption = None,
    probe_examples: ProbeExamplesOption = 500,
    plots: Annotated[bool, typer.Option(
        "--plots", help="Also PREFIX_gains and PREFIX_heatmap as SVG and PNG (the site's figures).")] = False,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Write a bench's grid (PREFIX.csv), leaderboard (PREFIX_leaderboard.md) and analysis (.md, .json)."""
    from ..report import write_report  # lazy: pandas

    with Store(db) as store:
        written = write_report(store, out, prefix, bench_name, probe_target=probe_target,
                               probe_examples=probe_examples, plots=plots)
    console.print(f"wrote {', '.join(path.name for path in written)} to {escape(str(out))}", highlight=False)
