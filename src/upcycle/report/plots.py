"""Plots: typed rows in, SVG text or PNG/SVG files out. Pure (no store, no global pyplot state).

One renderer for the site's inline figures and for the files ``upcycle report --plots`` writes for the README and
papers: matplotlib with the Agg backend, imported lazily (off the ``--help`` path). matplotlib rather than a
JavaScript chart library: the figures are then the same in the browser, in a PNG and in a paper, the site needs no
script to draw them (it works with JavaScript off), and every name is escaped by matplotlib's SVG writer, which
writes text as ``<text>`` elements (``svg.fonttype: none``) with ``<``, ``>`` and ``&`` escaped. Mathtext is off, so
a name holding ``$`` is shown as it is instead of being parsed as TeX.

The small interval bars in the leaderboard tables are not matplotlib figures: one per row would cost a figure each,
so :func:`interval_bar_svg` writes them directly; they hold numbers only, no names.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ranking import Leaderboard
from ..ranking.leaderboard import EXCLUDED
from .files import write_atomic

POSITIVE, NEGATIVE, NEUTRAL = "#1a7f37", "#c62828", "#5b6b7b"  # interval above 0, below 0, containing it
CMAP = "RdBu"  # diverging: red losses, blue gains, white at 0
MAX_ANNOTATED_CELLS = 600  # heatmap cells carry their value as text up to this many
PNG_DPI = 150
LABEL_CHARS = 36  # longer names are cut with an ellipsis in figures (the tables beside them show them whole)


@dataclass(frozen=True)
class Interval:
    """One labelled estimate and its 95% interval (None where there is none, e.g. a single seed)."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class CurvePoint:
    """A point of a fusion curve: ``iteration`` 0 is the vanilla base; None marks a reference (e.g. multitask),
    drawn as a horizontal line with its interval as a band."""

    label: str
    iteration: int | None
    value: float
    low: float | None = None
    high: float | None = None


@contextmanager
def _style(salt: str = "upcycle") -> Iterator[None]:
    """matplotlib's settings for every figure here: text as SVG text (escaped, searchable), no mathtext, ids salted
    per figure so that several SVGs inlined in one page do not share clip-path ids."""
    import matplotlib  # lazy: matplotlib is only needed to draw

    with matplotlib.rc_context({
        "svg.fonttype": "none", "text.parse_math": False, "svg.hashsalt": salt, "font.size": 9,
        "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10, "axes.titleweight": "bold",
        "font.family": "DejaVu Sans",
    }):
        yield


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # lazy: matplotlib is only needed to draw

    return Figure(figsize=(width, height), layout="constrained")


def _short(label: str, limit: int = LABEL_CHARS) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= limit else label[:limit - 1] + "…"


def _colour(low: float | None, high: float | None) -> str:
    if low is not None and low > 0:
        return POSITIVE
    if high is not None and high < 0:
        return NEGATIVE
    return NEUTRAL


def intervals_figure(panels: Sequence[tuple[str, Sequence[Interval]]], *, xlabel: str, title: str | None = None,
                     reference: float | None = 0.0, signed: bool = True):
    """A forest plot: one row per label (first on top), a dot at the value and a bar over its interval; one panel
    per ``(title, items)`` side by side, sharing the rows. ``signed`` colours a bar by where its interval lies
    against 0 (green above, red below); otherwise every bar is neutral (for costs and regrets)."""
    labels = [_short(item.label) for item in panels[0][1]] if panels else []
    with _style():
        width = 0.8 + 0.065 * max(map(len, labels), default=0) + 3.4 * max(len(panels), 1)
        figure = _figure(width, 0.9 + 0.3 * max(len(labels), 1))
        axes = figure.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
        for index, (axis, (name, items)) in enumerate(zip(axes, panels)):
            for row, item in enumerate(items):
                colour = _colour(item.low, item.high) if signed else NEUTRAL
                if item.low is not None and item.high is not None:
                    axis.hlines(row, item.low, item.high, color=colour, linewidth=3, alpha=0.55,
                                gid=f"interval-{index}-{row}")
                axis.plot([item.value], [row], "o", color=colour, markersize=5, gid=f"value-{index}-{row}")
            if reference is not None:
                axis.axvline(reference, color="#888888", linewidth=0.8, linestyle="--")
            axis.set_title(name)
            axis.set_xlabel(xlabel)
            axis.grid(axis="x", color="#eeeeee")
            axis.set_ylim(len(labels) - 0.5, -0.5)
        axes[0].set_yticks(range(len(labels)), labels)
        if title:
            figure.suptitle(title, fontsize=10, fontweight="bold")
    return figure


def heatmap_figure(board: Leaderboard, *, title: str | None = None):
    """Candidates (rows, by rank) x targets (columns): gain in points, diverging colours centred on 0 (symmetric
    around it, so equal colours mean equal magnitudes), overlap cells hatched grey, cells not trained yet white
    with a dash. Each cell is one rectangle with the SVG id ``cell-<row>-<column>``."""
    from matplotlib import colormaps  # lazy: matplotlib is only needed to draw
    from matplotlib.cm import ScalarMappable  # lazy: matplotlib is only needed to draw
    from matplotlib.colors import Normalize  # lazy: matplotlib is only needed to draw
    from matplotlib.patches import Patch, Rectangle  # lazy: matplotlib is only needed to draw

    rows = [row for row in board.rows if not row.is_base]
    targets = list(board.targets)
    numbers = [v for row in rows for v in row.values.values() if isinstance(v, int | float) and math.isfinite(v)]
    extent = max((abs(v) for v in numbers), default=1.0) or 1.0
    norm, cmap = Normalize(-extent, extent), colormaps[CMAP]
    annotate = len(rows) * len(targets) <= MAX_ANNOTATED_CELLS
    names, columns = [_short(row.candidate) for row in rows], [_short(target) for target in targets]
    with _style():
        figure = _figure(1.9 + 0.065 * max(map(len, names), default=0) + 0.62 * max(len(targets), 1),
                         1.2 + 0.045 * max(map(len, columns), default=0) + 0.3 * max(len(rows), 1))
        axis = figure.subplots()
        for i, row in enumerate(rows):
            for j, target in enumerate(targets):
                value = row.values.get(target)
                if value == EXCLUDED:
                    cell = Rectangle((j, i), 1, 1, facecolor="#e6e6e6", edgecolor="#a0a0a0", hatch="///",
                                     linewidth=0)
                    text, ink = "", "#555555"
                elif value is None:
                    cell = Rectangle((j, i), 1, 1, facecolor="white", edgecolor="#dddddd", linewidth=0.5)
                    text, ink = "-", "#999999"
                else:
                    cell = Rectangle((j, i), 1, 1, facecolor=cmap(norm(value)), edgecolor="white", linewidth=0.5)
                    text, ink = f"{value:+.1f}", "white" if abs(value) > 0.6 * extent else "#222222"
                cell.set_gid(f"cell-{i}-{j}")
                axis.add_patch(cell)
                if annotate and text:
                    axis.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7, color=ink)
        axis.set_xlim(0, max(len(targets), 1))
        axis.set_ylim(max(len(rows), 1), 0)
        axis.xaxis.tick_top()  # targets above the matrix: the legend goes below it
        axis.set_xticks([j + 0.5 for j in range(len(targets))], columns, rotation=40, ha="left",
                        rotation_mode="anchor")
        axis.set_yticks([i + 0.5 for i in range(len(rows))], names)
        axis.tick_params(length=0)
        for side in ("left", "bottom", "top"):
            axis.spines[side].set_visible(False)
        figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axis, label="gain (points)",
                        shrink=0.8)
        if any(value == EXCLUDED for row in rows for value in row.values.values()):
            axis.legend(handles=[Patch(facecolor="#e6e6e6", edgecolor="#a0a0a0", hatch="///",
                                       label="overlap: not counted")],
                        loc="upper left", bbox_to_anchor=(0, -0.01), frameon=False, fontsize=8,
                        bbox_transform=axis.transAxes, borderaxespad=0)
        if title:
            figure.suptitle(title, fontsize=10, fontweight="bold")
    return figure


def curve_figure(points: Sequence[CurvePoint], *, title: str | None = None,
                 ylabel: str = "gain over the vanilla base (points)"):
    """Gain per iteration with its 95% interval (error bars and a band); references (``iteration`` None) as
    dotted horizontal lines with their interval as a light band."""
    curve = sorted((p for p in points if p.iteration is not None), key=lambda p: p.iteration)
    references = [p for p in points if p.iteration is None]
    with _style():
        figure = _figure(6.4, 3.6)
        axis = figure.subplots()
        axis.axhline(0, color="#888888", linewidth=0.8, linestyle="--")
        palette = ["#8250df", "#bf8700", "#0a7ea4", "#6e7781"]
        for index, point in enumerate(references):
            colour = palette[index % len(palette)]
            axis.axhline(point.value, color=colour, linestyle=":", linewidth=1.2, label=_short(point.label, 64),
                         gid=f"reference-{index}")
            if point.low is not None and point.high is not None:
                axis.axhspan(point.low, point.high, color=colour, alpha=0.07, linewidth=0)
        xs = [p.iteration for p in curve]
        ys = [p.value for p in curve]
        lows = [p.low if p.low is not None else p.value for p in curve]
        highs = [p.high if p.high is not None else p.value for p in curve]
        axis.fill_between(xs, lows, highs, color="#0969da", alpha=0.12, linewidth=0)
        axis.errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, lows)], [hi - y for y, hi in zip(ys, highs)]],
                      fmt="o-", color="#0969da", capsize=3, label="fused base (95% interval)", gid="curve")
        axis.set_xticks(xs)
        axis.set_xlabel("iteration (0: the vanilla base)")
        axis.set_ylabel(ylabel)
        axis.grid(axis="y", color="#eeeeee")
        axis.legend(fontsize=8, frameon=False, loc="best")
        if title:
            axis.set_title(title)
    return figure


def bench_figures(board: Leaderboard) -> dict[str, Any]:
    """A bench's figures by name: ``gains`` (average gain and 95% interval per candidate, by rank) and
    ``heatmap`` (:func:`heatmap_figure`)."""
    items = [Interval(row.candidate, row.avg_gain, row.ci_low, row.ci_high) for row in board.rows if not row.is_base]
    return {
        "gains": intervals_figure([("average gain over the vanilla base", items)], xlabel="points (95% interval)"),
        "heatmap": heatmap_figure(board),
    }


def to_svg(figure, *, salt: str = "upcycle") -> str:
    """The figure as an ``<svg>`` element to inline in HTML (no XML declaration or DOCTYPE); deterministic (no
    date), ids salted with ``salt`` (one salt per figure of a page)."""
    buffer = io.StringIO()
    with _style(salt):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def to_png(figure) -> bytes:
    buffer = io.BytesIO()
    with _style():
        figure.savefig(buffer, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buffer.getvalue()


def write_figures(figures: Mapping[str, Any], out: str | Path, prefix: str,
                  formats: Sequence[str] = ("svg", "png")) -> list[Path]:
    """Write each figure as ``OUT/PREFIX_<name>.<format>`` (atomically); return the paths written."""
    written = []
    for name, figure in figures.items():
        for fmt in formats:
            path = Path(out) / f"{prefix}_{name}.{fmt}"
            body = to_svg(figure, salt=f"{prefix}_{name}") if fmt == "svg" else to_png(figure)
            written.append(write_atomic(path, body))
    return written


def bar_scale(intervals: Sequence[tuple[float, float | None, float | None]]) -> tuple[float, float]:
    """One axis for a table's interval bars: from the lowest to the highest end (0 included), padded 5%."""
    ends = [0.0] + [v for value, low, high in intervals for v in (value, low, high) if v is not None]
    low, high = min(ends), max(ends)
    pad = (high - low) * 0.05 or 1.0
    return low - pad, high + pad


def interval_bar_svg(value: float, low: float | None, high: float | None, *, scale: tuple[float, float],
                     width: int = 120, height: int = 14) -> str:
    """A small inline SVG: the 95% interval as a bar, the value as a dot, 0 as a vertical line, on the table's
    common ``scale`` (:func:`bar_scale`). Numbers only: nothing in it comes from a name."""
    start, stop = scale

    def x(v: float) -> float:
        return 2 + (v - start) / (stop - start) * (width - 4)

    colour = _colour(low, high)
    middle = height / 2
    parts = [f'<svg class="bar" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_interval_text(value, low, high)}">',
             f"<title>{_interval_text(value, low, high)}</title>"]
    if start <= 0 <= stop:
        parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="0" y2="{height}" stroke="#999" stroke-width="1"/>')
    if low is not None and high is not None:
        parts.append(f'<rect x="{x(low):.1f}" y="{middle - 3:.1f}" width="{max(x(high) - x(low), 1):.1f}" '
                     f'height="6" rx="2" fill="{colour}" fill-opacity="0.45"/>')
    parts.append(f'<circle cx="{x(value):.1f}" cy="{middle:.1f}" r="3" fill="{colour}"/>')
    return "".join(parts) + "</svg>"


def _interval_text(value: float, low: float | None, high: float | None) -> str:
    interval = f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else ""
    return f"{value:+.2f}{interval}"
