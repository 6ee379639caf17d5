"""``upcycle site``: the leaderboard site, a static folder of HTML pages with plots; ``--serve`` to look at it.

The report package (pandas, Jinja, matplotlib) is imported inside the command, off the ``--help`` path.
"""

from __future__ import annotations

import functools
import http.server
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..store import Store
from .common import DbOption, app, console, friendly_errors, progress_bars, split_list


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site's folder; no log line per request."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


def serve(folder: Path, port: int = 0, host: str = "127.0.0.1") -> None:
    """Serve ``folder`` on ``host`` (loopback by default) until Ctrl-C; port 0 takes a free one."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        console.print(f"serving {escape(str(folder))} on {host} until Ctrl-C; open", highlight=False)
        print(f"http://{host}:{server.server_address[1]}/index.html", flush=True)  # whole, never wrapped
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("stopped", highlight=False)


@app.command()
@friendly_errors
def site(
    out: Annotated[Path, typer.Option(help="The site's folder (replaced by a rerun; open OUT/index.html).")]
    = Path("site"),
    bench_names: Annotated[str | None, typer.Option(
        "--bench", help="Comma-separated bench names (default: every bench, and the stored finetunes no bench holds).")]
    = None,
    results: Annotated[list[Path] | None, typer.Option(
        metavar="PATH",
        help="A folder of result files, or one file (repeatable): selection evaluations (evaluate-selection --out), "
             "merge and fusion results (benchmarks/results).")] = None,
    png: Annotated[bool, typer.Option(help="Also write each figure as a PNG beside its SVG, under OUT/plots.")] = True,
    serve_: Annotated[bool, typer.Option("--serve", help="Then serve it on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve (0: a free one).")] = 0,
    db: DbOption = Path("upcycle.db"),
) -> None:
    """Build the leaderboard site: benches per architecture, leaderboards with interval bars, heatmaps, analyses,
    a page per checkpoint (lineage, scores, model-index), selection, merge and fusion results."""
    from ..report.site import build_site  # lazy: pandas, Jinja and matplotlib

    with Store(db) as store, progress_bars("benches") as progress:
        built = build_site(store, out, benches=split_list(bench_names), results=results or [], png=png,
                           progress=progress)
    console.print(f"wrote {escape(str(out / 'index.html'))}: {len(built.benches)} bench(es), {len(built.models)} "
                  f"checkpoint page(s)" + "".join(f", {len(items)} {kind}" for kind, items in (
                      ("selection evaluation(s)", built.selections), ("merge result(s)", built.merges),
                      ("fusion curve(s)", built.fusions)) if items), highlight=False)
    if serve_:
        serve(out, port)
