"""Views: typed rows in, text out. Pure renderers (table, Markdown, CSV, JSON) per kind of result, plots (SVG, PNG),
the bench report as Python calls (:func:`analyze`, :func:`write_report`), the static leaderboard site
(:func:`build_site`), and atomic file writing."""

from .bench import analyze, write_report
from .files import write_atomic
from .site import build_site

__all__ = ["analyze", "build_site", "write_atomic", "write_report"]
