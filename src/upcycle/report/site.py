"""The leaderboard site: a static folder of HTML pages with plots, built from the store (and result files).

Three steps, the first the only one that reads anything: :func:`collect_site` turns the store's contents (benches,
their leaderboards and analyses, the zoo and its lineage, stored finetunes) and result files (``--results``: the
selection evaluations, merge and fusion results that ``benchmarks/`` commits) into typed values;
:func:`render_site` turns those into files (pure: HTML from Jinja templates with autoescape on, figures from
:mod:`upcycle.report.plots`); :func:`build_site` writes them as one folder, atomically. Nothing here recomputes a
gain: the leaderboard rows, the analysis and the result files are shown as they are.

The folder (open ``index.html`` from disk, or serve it)::

    index.html                  benches per architecture, every checkpoint, links to the other results
    bench-<name>.html           leaderboard with interval bars, candidate x target heatmap, analysis
    model-<fingerprint>.html    lineage, scores, the Hugging Face model-index block to copy
    selection.html              selection evaluations: Regret@k per estimator with intervals
    merges.html, fusion.html    merge results, fusion gain curves per iteration with intervals
    plots/                      every figure as SVG and PNG
    static/                     site.css, site.js (sortable and filterable tables); nothing from the network
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from .. import __version__
from ..checkpoints import atomic_directory
from ..errors import ConfigError, UpcycleError
from ..ranking import Bench, Leaderboard, benches_from_results, build_leaderboard, load_bench
from ..ranking.leaderboard import EXCLUDED, LeaderboardRow
from ..specs import ProgressCallback
from ..store import Store
from .bench import analyze
from .model_card import model_index
from .plots import (
    CurvePoint,
    Interval,
    bar_scale,
    bench_figures,
    curve_figure,
    interval_bar_svg,
    intervals_figure,
    to_png,
    to_svg,
)

MARKER = ".upcycle-site"  # a folder holding this file was written by build_site and may be replaced by a rerun
TEMPLATES = Path(__file__).parent / "site_templates"
STATIC = ("site.css", "site.js")
FUSED = re.compile(r"-iter(\d+)$")  # fused bases are registered as NAME-iterN


@dataclass(frozen=True)
class BenchEntry:
    """A bench on the site: its leaderboard, the analysis (or why there is none), whether it was read off stored
    finetunes (:func:`~upcycle.ranking.benches_from_results`) rather than saved by ``upcycle bench``."""

    slug: str
    board: Leaderboard
    derived: bool = False
    analysis: dict[str, Any] | None = None
    analysis_note: str | None = None


@dataclass(frozen=True)
class Appearance:
    """A checkpoint's row in one bench's leaderboard."""

    bench: str
    slug: str
    row: LeaderboardRow
    candidates: int


@dataclass(frozen=True)
class ScoreRow:
    """A checkpoint's stored finetunes on one task under one protocol: the metric's mean over seeds (x100)."""

    task: str
    protocol: str
    metric: str
    mean: float
    scores: tuple[float, ...]


@dataclass(frozen=True)
class Link:
    """Another checkpoint named on a page: its fingerprint, its name where known, and how it is related."""

    fingerprint: str
    name: str
    note: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint's page: identity, lineage (the bases it descends from, nearest first; the merge or fusion it
    came from; what descends from it), its stored scores and leaderboard rows, and its model-index block."""

    fingerprint: str
    name: str
    arch: str
    model_type: str
    path: str
    source_task: str | None
    in_zoo: bool
    ancestors: tuple[Link, ...] = ()
    merge: dict[str, Any] | None = None
    fused: tuple[str, int] | None = None  # (fusion bench, iteration)
    children: tuple[Link, ...] = ()
    scores: tuple[ScoreRow, ...] = ()
    appearances: tuple[Appearance, ...] = ()
    model_index: str = ""

    @property
    def kind(self) -> str:
        if self.fused:
            return "fused base"
        if self.merge:
            return "merge"
        if self.ancestors or self.source_task:
            return "finetuned"
        return "base"


@dataclass(frozen=True)
class EstimatorRow:
    name: str
    regret_at_1: float
    regret_at_1_ci: tuple[float, float] | None
    regret_at_3: float
    regret_at_3_ci: tuple[float, float] | None
    regret_at_5: float | None
    ndcg: float | None
    spearman: float | None
    kendall: float | None
    cost_fraction: float | None
    seconds_per_target: float | None


@dataclass(frozen=True)
class SelectionEntry:
    """A selection evaluation (``upcycle evaluate-selection --out``'s JSON): estimators by Regret@3."""

    name: str
    source: str
    default: str | None
    candidates: int | None
    targets: int | None
    device: str | None
    estimators: tuple[EstimatorRow, ...]
    nested: dict[str, Any] | None = None


@dataclass(frozen=True)
class MergeRow:
    model: str
    gain: float
    low: float | None
    high: float | None
    per_target: dict[str, float]
    probe_accuracy: float | None  # mean over the source tasks, x100


@dataclass(frozen=True)
class MergeEntry:
    """Merged checkpoints judged as starting points (``benchmarks/merge_*.py``'s JSON)."""

    name: str
    source: str
    targets: tuple[str, ...]
    sources: tuple[str, ...]
    seeds: int | None
    protocol: str | None
    rows: tuple[MergeRow, ...]


@dataclass(frozen=True)
class FusionEntry:
    """A fusion gain curve: from a ``fusion-*`` bench of the store, or a fusion result file's ``curve``."""

    name: str
    source: str
    targets: tuple[str, ...]
    points: tuple[CurvePoint, ...]
    differences: tuple[Interval, ...] = ()


@dataclass(frozen=True)
class SiteData:
    database: str
    benches: tuple[BenchEntry, ...]
    models: tuple[ModelEntry, ...]
    selections: tuple[SelectionEntry, ...] = ()
    merges: tuple[MergeEntry, ...] = ()
    fusions: tuple[FusionEntry, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # result files that were not shown, and why


# ------------------------------------------------------------------------------------------------ collect


def collect_site(store: Store, *, benches: Sequence[str] | None = None, results: Sequence[str | Path] = (),
                 progress: ProgressCallback | None = None) -> SiteData:
    """Everything the site shows, as typed values: the named benches (default: every saved bench, and the benches
    read off stored finetunes that no saved bench holds), a page per checkpoint of the zoo or of those benches,
    and the result files under ``results`` (folders or files). ``progress(phase, done, total)`` hears of each bench
    analysed (the analysis takes seconds on a large grid). Raises UpcycleError when there is nothing to show."""
    if benches:
        grids = [(load_bench(store, name), False) for name in benches]
    else:
        grids = [(load_bench(store, name), False) for name, _, _ in store.benches()]
        grids += [(bench, True) for bench in benches_from_results(store)]
    entries = []
    slugs: set[str] = set()
    for grid, derived in grids:
        board = build_leaderboard(grid, store)
        analysis, note = None, None
        try:
            analysis = analyze(store, grid)
        except UpcycleError as error:
            note = str(error)
        entries.append(BenchEntry(_slug(f"bench-{grid.name}", grid.name, slugs), board, derived, analysis, note))
        if progress is not None:
            progress("leaderboards and analyses", len(entries), len(grids))
    models = _models(store, entries)
    selections, merges, fusions, skipped = read_results(results)
    fusions = _store_fusions(entries) + fusions
    if not entries and not models and not (selections or merges or fusions):
        raise ConfigError(f"{store.path}: nothing to show yet (no bench, no checkpoint): run `upcycle bench` or "
                          "`make demo` first, pass the right --db, or --results with result files.")
    return SiteData(store.path.name, tuple(entries), tuple(models), tuple(selections), tuple(merges), tuple(fusions),
                    tuple(skipped))


def _slug(stem: str, name: str, taken: set[str]) -> str:
    """A file-name-safe, unique page name: ``stem`` with anything but letters, digits, ``-``, ``_`` replaced;
    the name's hash appended when that changed it or it was taken (so two names never share a page)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:80] or "page"
    if slug in taken or slug != stem:
        slug = f"{slug}-{sha256(name.encode()).hexdigest()[:8]}"
    taken.add(slug)
    return slug


def model_page(fingerprint: str) -> str:
    """The page of a checkpoint: named by its fingerprint's first 16 hex digits."""
    digits = re.sub(r"[^0-9a-f]", "", fingerprint.lower())[:16]
    return f"model-{digits or sha256(fingerprint.encode()).hexdigest()[:16]}.html"


def _models(store: Store, benches: Sequence[BenchEntry]) -> list[ModelEntry]:
    zoo = {entry.fingerprint: entry for entry in store.checkpoints()}
    refs: dict[str, tuple[Any, str | None, str]] = {}  # fingerprint -> (CheckpointRef, source task, arch)
    appearances: dict[str, list[Appearance]] = {}
    fused: dict[str, tuple[str, int]] = {}
    for entry in benches:
        bench = entry.board.bench
        for candidate in (bench.base, *bench.candidates):
            refs.setdefault(candidate.checkpoint.fingerprint, (candidate.checkpoint, candidate.source_task, bench.arch))
        ranked = sum(1 for row in entry.board.rows if not row.is_base)
        for row in entry.board.rows:
            appearances.setdefault(row.fingerprint, []).append(Appearance(bench.name, entry.slug, row, ranked))
            match = FUSED.search(row.candidate)
            if bench.name.startswith("fusion-") and match and not row.is_base:
                fused[row.fingerprint] = (bench.name, int(match.group(1)))
    names = {fp: entry.name for fp, entry in zoo.items()} | {fp: ref.name for fp, (ref, _, _) in refs.items()
                                                             if fp not in zoo}
    merges = {fp: _merge_lineage(store.provenance(fp), names) for fp in zoo}
    children: dict[str, list[Link]] = {}
    for fp, entry in zoo.items():
        if entry.base_fingerprint and not merges[fp]:
            children.setdefault(entry.base_fingerprint, []).append(
                Link(fp, entry.name, f"finetuned on {entry.source_task}" if entry.source_task else "finetuned"))
        for item in (merges[fp] or {}).get("inputs", []):
            children.setdefault(item.fingerprint, []).append(Link(fp, entry.name, "merged into"))
    models = []
    for fp in [*zoo, *(fp for fp in refs if fp not in zoo)]:
        entry = zoo.get(fp)
        ref, source_task, arch = refs.get(fp, (None, None, ""))
        name = entry.name if entry else ref.name
        models.append(ModelEntry(
            fingerprint=fp, name=name, arch=entry.arch if entry else arch,
            model_type=entry.model_type if entry else ref.model_type, path=entry.path if entry else ref.reference,
            source_task=entry.source_task if entry else source_task, in_zoo=entry is not None,
            ancestors=tuple(_ancestors(fp, zoo)), merge=merges.get(fp), fused=fused.get(fp),
            children=tuple(sorted(children.get(fp, []), key=lambda link: link.name)),
            scores=tuple(_scores(store, fp)), appearances=tuple(appearances.get(fp, [])),
            model_index=model_index(store, fp, name),
        ))
    return sorted(models, key=lambda model: (model.arch, model.kind != "base", model.name))


def _ancestors(fingerprint: str, zoo: Mapping[str, Any]) -> list[Link]:
    """The recorded bases, nearest first (a cycle or a base outside the zoo ends the chain)."""
    chain, seen = [], {fingerprint}
    current = zoo.get(fingerprint)
    while current is not None and current.base_fingerprint and current.base_fingerprint not in seen:
        seen.add(current.base_fingerprint)
        parent = zoo.get(current.base_fingerprint)
        chain.append(Link(current.base_fingerprint, parent.name if parent else current.base_fingerprint[:12],
                          f"on {parent.source_task}" if parent and parent.source_task else ""))
        current = parent
    return chain


def _merge_lineage(provenance: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any] | None:
    """A merge's method and inputs, from its ``upcycle.json`` provenance (None for anything else)."""
    if provenance.get("kind") != "merge":
        return None
    inputs = [Link(str(item.get("fingerprint", "")), names.get(item.get("fingerprint", ""), str(item.get("model", ""))))
              for item in provenance.get("inputs", []) if isinstance(item, dict)]
    base = provenance.get("base_model") or {}
    return {"method": str(provenance.get("merge_method", "?")), "inputs": inputs,
            "base": Link(str(base["fingerprint"]), names.get(base["fingerprint"], str(base.get("model", ""))))
            if base.get("fingerprint") else None}


def _scores(store: Store, fingerprint: str) -> list[ScoreRow]:
    grouped: dict[tuple[str, str, str], list[float]] = {}
    for row in store.results_for(fingerprint):
        grouped.setdefault((row["task"], row["protocol"], row["metric"]), []).append(float(row["score"]) * 100)
    return [ScoreRow(task, protocol, metric, sum(values) / len(values), tuple(values))
            for (task, protocol, metric), values in sorted(grouped.items())]


def _store_fusions(benches: Sequence[BenchEntry]) -> list[FusionEntry]:
    """The curve of every ``fusion-*`` bench: iteration N from the fused bases' ``NAME-iterN`` names, the base at 0;
    other candidates as references."""
    curves = []
    for entry in benches:
        board = entry.board
        if not board.bench.name.startswith("fusion-"):
            continue
        points = [CurvePoint(f"{board.bench.base.checkpoint.name} (vanilla base)", 0, 0.0)]
        for row in board.rows:
            if not row.is_base:
                match = FUSED.search(row.candidate)
                points.append(CurvePoint(row.candidate, int(match.group(1)) if match else None, row.avg_gain,
                                         row.ci_low, row.ci_high))
        curves.append(FusionEntry(board.bench.name, f"bench {board.bench.name} in the store", tuple(board.targets),
                                  tuple(points)))
    return curves


def read_results(paths: Sequence[str | Path]) -> tuple[list[SelectionEntry], list[MergeEntry], list[FusionEntry],
                                                        list[str]]:
    """Result files to show: each path a file or a folder (its ``*.json``). Recognised by their keys: a selection
    evaluation (``estimators`` and ``per_target``), a merge result (``starting_point``), a fusion result
    (``curve``); any other file is listed as skipped. A recognised file that does not read is an error."""
    selections, merges, fusions, skipped = [], [], [], []
    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(given.glob("*.json"))
        elif given.is_file():
            files = [given]
        else:
            raise ConfigError(f"--results {given}: no such file or folder (give a folder of result files, or one).")
        for file in files:
            try:
                document = json.loads(file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                skipped.append(f"{file.name}: not JSON ({error})")
                continue
            keys = set(document) if isinstance(document, dict) else set()
            try:
                if {"estimators", "per_target"} <= keys:
                    selections.append(_selection(file, document))
                elif "starting_point" in keys:
                    merges.append(_merge(file, document))
                elif "curve" in keys:
                    fusions += _fusion(file, document)
                else:
                    skipped.append(f"{file.name}: not a selection, merge or fusion result")
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise ConfigError(f"{file}: not a readable result file ({type(error).__name__}: {error}).") from None
    return selections, merges, fusions, skipped


def _pair(value: Any) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value is not None else None


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _selection(file: Path, document: dict[str, Any]) -> SelectionEntry:
    rows = [EstimatorRow(
        name=str(name), regret_at_1=float(entry["regret_at_1"]), regret_at_1_ci=_pair(entry.get("regret_at_1_ci")),
        regret_at_3=float(entry["regret_at_3"]), regret_at_3_ci=_pair(entry.get("regret_at_3_ci")),
        regret_at_5=_optional(entry.get("regret_at_5")), ndcg=_optional(entry.get("ndcg")),
        spearman=_optional(entry.get("spearman")), kendall=_optional(entry.get("kendall")),
        cost_fraction=_optional(entry.get("cost_fraction")),
        seconds_per_target=_optional(entry.get("cpu_seconds_per_target")),
    ) for name, entry in document["estimators"].items()]
    rows.sort(key=lambda row: (row.regret_at_3, row.regret_at_1, row.name))
    nested = document.get("nested")
    return SelectionEntry(file.stem, str(file), document.get("default"), document.get("candidates"),
                          document.get("targets"), document.get("device"), tuple(rows),
                          nested if isinstance(nested, dict) else None)


def _merge(file: Path, document: dict[str, Any]) -> MergeEntry:
    probes = document.get("probe_accuracy") or {}
    rows = []
    for model, entry in document["starting_point"].items():
        accuracy = probes.get(model) or {}
        gain = float(entry["mean_gain"])
        low, high = _pair(entry.get("ci95")) or (None, None)
        if low == high == gain:  # the reference itself (the vanilla base): no interval to show
            low = high = None
        rows.append(MergeRow(
            model=str(model), gain=gain, low=low, high=high,
            per_target={str(k): float(v) for k, v in (entry.get("per_target") or {}).items()},
            probe_accuracy=sum(accuracy.values()) / len(accuracy) * 100 if accuracy else None))
    rows.sort(key=lambda row: -row.gain)
    seeds = document.get("seeds")
    return MergeEntry(file.stem, str(file), tuple(map(str, document.get("targets") or [])),
                      tuple(map(str, document.get("sources") or [])), len(seeds) if isinstance(seeds, list) else None,
                      document.get("protocol"), tuple(rows))


def _fusion(file: Path, document: dict[str, Any]) -> list[FusionEntry]:
    """The file's ``curve`` (and ``wide``, a second set of targets, where present) with its differences."""
    curves = []
    for key, title in (("curve", file.stem), ("wide", f"{file.stem} (wider check)")):
        if key not in document:
            continue
        points, targets = [], []
        for label, entry in document[key].items():
            match = re.match(r"iteration (\d+)", label)
            iteration = 0 if "vanilla" in label else int(match.group(1)) if match else None
            low, high = _pair(entry.get("ci")) or (None, None)
            if iteration == 0:
                low = high = None
            points.append(CurvePoint(str(label), iteration, float(entry["avg_gain"]), low, high))
            targets = targets or list(entry.get("per_target") or {})
        prefix = "" if key == "curve" else "wide_"
        differences = tuple(
            Interval(name[len(prefix):].replace("_", " "), float(value["difference"]), *(_pair(value.get("ci"))
                                                                                        or (None, None)))
            for name, value in document.items()
            if name.startswith(f"{prefix}final_minus_") and isinstance(value, dict))
        curves.append(FusionEntry(title, str(file), tuple(map(str, targets)), tuple(points), differences))
    return curves


# ------------------------------------------------------------------------------------------------ render


@dataclass(frozen=True)
class Figure:
    """A figure on a page: the inline SVG, its files under ``plots/``, a caption."""

    id: str
    svg: Markup
    files: tuple[str, ...]
    caption: str


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["signed"] = lambda v, digits=2: "" if v is None else f"{v:+.{digits}f}"
    environment.filters["fixed"] = lambda v, digits=2: "" if v is None else f"{v:.{digits}f}"
    environment.filters["percent"] = lambda v, digits=2: "" if v is None else f"{v * 100:.{digits}f}%"
    environment.globals["model_page"] = model_page
    environment.globals["EXCLUDED"] = EXCLUDED
    return environment


def inline_svg(svg: str) -> Markup:
    """An SVG (from :mod:`upcycle.report.plots`) marked safe to inline, after checking that it is plain drawing:
    well-formed XML with no script, no foreign HTML and no event-handler attribute. Names in it are text, escaped
    by the writer; this check makes sure nothing else can run."""
    root = ElementTree.fromstring(svg)
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag in ("script", "foreignobject", "iframe", "object", "embed") or any(
                name.rsplit("}", 1)[-1].lower().startswith("on") for name in element.attrib):
            raise UpcycleError(f"refusing to inline an SVG holding <{tag}> or an event handler")
    return Markup(svg)


class _Figures:
    """Renders figures once each into the files map and the page's list; names are unique per site."""

    def __init__(self, files: dict[str, str | bytes], png: bool):
        self.files, self.png = files, png

    def __call__(self, name: str, figure: Any, caption: str) -> Figure:
        svg = to_svg(figure, salt=name)
        paths = [f"plots/{name}.svg"]
        self.files[paths[0]] = svg
        if self.png:
            paths.append(f"plots/{name}.png")
            self.files[paths[1]] = to_png(figure)
        return Figure(name, inline_svg(svg), tuple(paths), caption)


def render_site(site: SiteData, *, png: bool = True) -> dict[str, str | bytes]:
    """Every file of the site, by relative path: pure (the same values give the same files). ``png`` also writes
    each figure as a PNG beside its SVG (for slides and papers)."""
    environment = _environment()
    files: dict[str, str | bytes] = {name: (TEMPLATES / name).read_text() for name in STATIC}
    files = {f"static/{name}": body for name, body in files.items()}
    figures = _Figures(files, png)
    common = {"site": site, "version": __version__, "known": {model.fingerprint for model in site.models}}
    pages = {"index.html": ("index.html", {"title": "Leaderboards", "archs": _by_arch(site.benches)})}
    for entry in site.benches:
        board = entry.board
        candidates = [row for row in board.rows if not row.is_base]
        scale = bar_scale([(row.avg_gain, row.ci_low, row.ci_high) for row in candidates])
        bars = {row.fingerprint: Markup(interval_bar_svg(row.avg_gain, row.ci_low, row.ci_high, scale=scale))
                for row in candidates}
        plots = []
        if candidates:
            drawn = bench_figures(board)
            plots = [figures(f"{entry.slug}-gains", drawn["gains"],
                             "Average gain over the vanilla base, points: dot = mean, bar = 95% bootstrap interval "
                             "(green: above 0, red: below 0)."),
                     figures(f"{entry.slug}-heatmap", drawn["heatmap"],
                             "Gain per candidate and target, points (mean over seeds); blue above the base, red "
                             "below, white at 0; hatched: the candidate's source data overlaps the target, not "
                             "counted; '-': not trained yet.")]
        pages[f"{entry.slug}.html"] = ("bench.html", {
            "title": board.bench.name, "entry": entry, "board": board, "base": board.rows[0] if board.rows else None,
            "candidates": candidates, "bars": bars, "figures": plots, "protocol": _protocol(board.bench)})
    for model in site.models:
        pages[model_page(model.fingerprint)] = ("model.html", {"title": model.name, "model": model})
    taken: set[str] = set()  # plot names: two result files of one name (from two folders) get two plots
    if site.selections:
        plots = {index: figures(_slug(f"selection-{entry.name}", entry.source, taken), intervals_figure(
            [(title, [Interval(row.name, getattr(row, metric), *(getattr(row, f"{metric}_ci") or (None, None)))
                      for row in entry.estimators]) for metric, title in (("regret_at_1", "Regret@1"),
                                                                          ("regret_at_3", "Regret@3"))],
            xlabel="regret, % of the best score (95% interval)", reference=None, signed=False),
            "Regret@k per estimator (lower is better): dot = mean over held-out targets, bar = 95% bootstrap "
            "interval over targets.") for index, entry in enumerate(site.selections)}
        pages["selection.html"] = ("selection.html", {"title": "Selection", "plots": plots})
    if site.merges or any(model.merge and not model.fused for model in site.models):
        plots = {index: figures(_slug(f"merge-{entry.name}", entry.source, taken), intervals_figure(
            [("gain as a starting point", [Interval(row.model, row.gain, row.low, row.high) for row in entry.rows])],
            xlabel="points over the vanilla base (95% interval)"),
            "Gain as a starting point after finetuning on held-out targets: dot = mean, bar = 95% interval.")
            for index, entry in enumerate(site.merges)}
        pages["merges.html"] = ("merges.html", {"title": "Merges", "plots": plots})
    if site.fusions:
        plots = {index: figures(_slug(f"fusion-{entry.name}", f"{entry.source}:{entry.name}", taken),
                                curve_figure(entry.points),
                                "Gain of the fused base per iteration, points: error bars and band = 95% interval; "
                                "dotted lines: references, their band their interval.")
                 for index, entry in enumerate(site.fusions)}
        pages["fusion.html"] = ("fusion.html", {"title": "Fusion", "plots": plots})
    for path, (template, context) in pages.items():
        files[path] = environment.get_template(template).render(**common, **context, page=path)
    files[MARKER] = f"upcycle {__version__} site; rebuilt by `upcycle site`, which replaces this folder\n"
    return files


def _by_arch(benches: Sequence[BenchEntry]) -> list[tuple[str, list[BenchEntry]]]:
    grouped: dict[str, list[BenchEntry]] = {}
    for entry in benches:
        grouped.setdefault(entry.board.bench.arch, []).append(entry)
    return sorted(grouped.items())


def _protocol(bench: Bench) -> str:
    p = bench.protocol
    return (f"{p.name}: {p.max_train or 'all'} train / {p.max_eval or 'all'} eval examples, {p.epochs} epochs, "
            f"batch {p.batch_size}, lr {p.learning_rate:g}, train {p.train_precision}")


# ------------------------------------------------------------------------------------------------ write


def write_site(files: Mapping[str, str | bytes], out: str | Path) -> Path:
    """Write the files as the folder ``out``, atomically: built beside it, then swapped in (a rerun replaces the
    old site in one step). A folder that exists and is not an upcycle site (no marker file) is left alone."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ConfigError(f"{out}: exists and is not a site written by upcycle (no {MARKER} in it); choose another "
                          "--out, or remove it first.")
    with atomic_directory(out, overwrite=True) as staging:
        for relative, body in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body) if isinstance(body, bytes) else path.write_text(body, encoding="utf-8")
    return out


def build_site(store: Store, out: str | Path, *, benches: Sequence[str] | None = None,
               results: Sequence[str | Path] = (), png: bool = True,
               progress: ProgressCallback | None = None) -> SiteData:
    """Build the static leaderboard site from ``store`` (and result files) into the folder ``out``, replacing an
    earlier build atomically; returns what it shows. See :func:`collect_site` for what is collected."""
    site = collect_site(store, benches=benches, results=results, progress=progress)
    write_site(render_site(site, png=png), out)
    return site
