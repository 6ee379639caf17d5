"""Plots: rows in, SVG and PNG out. Values are where they should be (cells, colours centred on 0, interval bars at
their coordinates), names are escaped text, and an inlined SVG never carries a script."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import pytest
from matplotlib import colormaps
from matplotlib.colors import to_hex

from upcycle.checkpoints import CheckpointRef
from upcycle.errors import UpcycleError
from upcycle.protocols import get_protocol
from upcycle.ranking import Bench, Candidate, Leaderboard
from upcycle.ranking.leaderboard import EXCLUDED, LeaderboardRow
from upcycle.report.plots import (
    CMAP,
    CurvePoint,
    Interval,
    bar_scale,
    bench_figures,
    curve_figure,
    heatmap_figure,
    interval_bar_svg,
    intervals_figure,
    to_png,
    to_svg,
    write_figures,
)
from upcycle.report.site import inline_svg
from upcycle.tasks import TaskRef

HOSTILE = "<script>alert(1)</script>"
SVG = "{http://www.w3.org/2000/svg}"


def ref(name: str, fingerprint: str) -> CheckpointRef:
    return CheckpointRef(reference=f"/zoo/{name}", name=name, fingerprint=fingerprint, model_type="bert")


def board(values: dict[str, dict[str, float | str | None]], targets: list[str]) -> Leaderboard:
    """A leaderboard of typed rows (no store): ``values`` is candidate -> target -> gain (or EXCLUDED / None)."""
    bench = Bench(name="b", arch="bert", base=Candidate(checkpoint=ref("base", "0" * 64)),
                  candidates=tuple(Candidate(checkpoint=ref(name, f"{i + 1:064x}")) for i, name in enumerate(values)),
                  targets=tuple(TaskRef(source=t, name=t, fingerprint=f"task:{t}") for t in targets), seeds=(0, 1),
                  protocol=get_protocol("quick"))
    base = LeaderboardRow(None, "base (vanilla base)", None, "0" * 64, 0.0, None, None, None, None, None, True,
                          {t: 50.0 for t in targets})
    rows = [LeaderboardRow(rank, name, None, f"{rank:064x}", 1.0, -1.0, 3.0, 1, 1, -1.0, True, gains)
            for rank, (name, gains) in enumerate(values.items(), start=1)]
    return Leaderboard(bench, [base, *rows], targets, [], 0, 0)


def cells(svg: str) -> dict[str, str]:
    """``{cell id: its fill}`` of a heatmap SVG (each cell is a group holding one path)."""
    root = ElementTree.fromstring(svg)
    found = {}
    for group in root.iter(f"{SVG}g"):
        if re.fullmatch(r"cell-\d+-\d+", group.get("id", "")):
            path = group.find(f"{SVG}path")
            style = path.get("style", "")
            fill = re.search(r"fill:\s*([^;]+)", style)
            found[group.get("id")] = fill.group(1).strip() if fill else ""
    return found


def test_the_heatmap_has_one_cell_per_candidate_and_target_with_colours_centred_on_zero():
    targets = ["t1", "t2", "t3"]
    values = {"a": {"t1": 10.0, "t2": -10.0, "t3": 0.0}, "b": {"t1": EXCLUDED, "t2": None, "t3": 5.0}}
    svg = to_svg(heatmap_figure(board(values, targets)))
    fills = cells(svg)
    assert sorted(fills) == [f"cell-{i}-{j}" for i in range(2) for j in range(3)]
    cmap = colormaps[CMAP]
    # the largest gain in magnitude (10) sets a symmetric scale: +10 at one end, -10 at the other, 0 in the middle
    assert fills["cell-0-0"] == to_hex(cmap(1.0))
    assert fills["cell-0-1"] == to_hex(cmap(0.0))
    assert fills["cell-0-2"] == to_hex(cmap(0.5))
    assert fills["cell-1-2"] == to_hex(cmap(0.75))
    assert fills["cell-1-0"].startswith("url(#h")  # overlap: hatched
    assert fills["cell-1-1"] == "#ffffff"  # not trained yet
    for text in ("+10.0", "-10.0", "+5.0", "overlap: not counted"):
        assert f">{text}<" in svg


def test_names_are_escaped_text_in_the_svg_and_dollars_are_not_mathtext():
    values = {HOSTILE: {"t": 1.0}, "costs $5 and $x^2$": {"t": -1.0}, 'say "hi" & <b>bye</b>': {"t": 0.0}}
    svg = to_svg(heatmap_figure(board(values, ["t"])))
    assert HOSTILE not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "<b>" not in svg and "&lt;b&gt;bye&lt;/b&gt;" in svg
    assert "costs $5 and $x^2$" in svg  # shown as typed, not parsed as TeX
    assert ElementTree.fromstring(svg).tag == f"{SVG}svg"  # well-formed, no XML declaration before it
    assert not svg.startswith("<?xml")
    inline_svg(svg)  # passes the site's check


def test_intervals_figure_draws_a_bar_per_interval_and_a_dot_per_value():
    items = [Interval("above", 5.0, 1.0, 9.0), Interval("across", 1.0, -2.0, 4.0), Interval("one seed", -3.0)]
    svg = to_svg(intervals_figure([("gains", items)], xlabel="points"))
    assert len(re.findall(r'id="interval-0-\d+"', svg)) == 2  # no bar without an interval
    assert len(re.findall(r'id="value-0-\d+"', svg)) == 3
    for label in ("above", "across", "one seed", "gains", "points"):
        assert f">{label}<" in svg


def test_the_curve_puts_iterations_on_the_line_and_references_aside():
    points = [CurvePoint("vanilla", 0, 0.0), CurvePoint("iteration 1", 1, 2.0, -1.0, 5.0),
              CurvePoint("iteration 2", 2, 4.0, 1.0, 7.0), CurvePoint("multitask", None, 6.0, 2.0, 10.0)]
    svg = to_svg(curve_figure(points))
    assert 'id="curve' in svg and 'id="reference-0"' in svg and ">multitask<" in svg
    for tick in ("0", "1", "2"):
        assert f">{tick}<" in svg


def test_bench_figures_and_their_files(tmp_path):
    figures = bench_figures(board({"a": {"t": 2.0}, "b": {"t": -1.0}}, ["t"]))
    assert set(figures) == {"gains", "heatmap"}
    written = write_figures(figures, tmp_path, "grid")
    assert sorted(path.name for path in written) == ["grid_gains.png", "grid_gains.svg", "grid_heatmap.png",
                                                    "grid_heatmap.svg"]
    png = (tmp_path / "grid_heatmap.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert not list(tmp_path.glob(".*partial*"))
    assert to_svg(figures["gains"]) == to_svg(figures["gains"])  # deterministic: no date, fixed ids
    assert to_png(figures["gains"])[:4] == b"\x89PNG"


def test_interval_bar_coordinates():
    scale = bar_scale([(2.0, 1.0, 3.0), (-1.0, -4.0, 0.5)])
    assert scale[0] < -4.0 and scale[1] > 3.0  # padded
    assert bar_scale([(2.0, 1.0, 3.0)])[0] < 0  # 0 is always on the axis
    svg = interval_bar_svg(5.0, 0.0, 10.0, scale=(0.0, 10.0), width=104, height=14)
    root = ElementTree.fromstring(svg)
    circle, rect = root.find(f"{SVG}circle"), root.find(f"{SVG}rect")
    assert float(circle.get("cx")) == pytest.approx(52.0)  # 2 + 5/10 * 100
    assert float(rect.get("x")) == pytest.approx(2.0) and float(rect.get("width")) == pytest.approx(100.0)
    assert root.find(f"{SVG}title").text == "+5.00 [+0.00, +10.00]"
    assert ElementTree.fromstring(interval_bar_svg(1.0, None, None, scale=(0, 2))).find(f"{SVG}rect") is None
    assert 'fill="#1a7f37"' in interval_bar_svg(2.0, 1.0, 3.0, scale=(0, 4))  # above 0: green
    assert 'fill="#c62828"' in interval_bar_svg(-2.0, -3.0, -1.0, scale=(-4, 0))  # below 0: red


@pytest.mark.parametrize("svg", [
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><div>x</div></foreignObject></svg>',
])
def test_inline_svg_refuses_anything_that_could_run(svg):
    with pytest.raises(UpcycleError):
        inline_svg(svg)
