"""Views: typed rows in, text out. Pure renderers (table, Markdown, CSV, JSON) per kind of result, the bench
report as Python calls (:func:`analyze`, :func:`write_report`), and atomic file writing."""

from .bench import analyze, write_report
from .files import write_atomic

__all__ = ["analyze", "write_atomic", "write_report"]
