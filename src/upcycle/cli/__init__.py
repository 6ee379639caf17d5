"""The ``upcycle`` command line: one file per command group; each command parses its options, makes one call to
the Python API and renders the answer with Rich. Errors in the user's input print one red line (exit 2).

Heavy libraries (torch, pandas, Ray) are imported inside the commands that need them, so ``upcycle --help``
starts in a fraction of a second.
"""

from __future__ import annotations

import os

from . import experts, finetune, flip, fusion, merging, ranking, scoring, selection, site, store, zoo  # noqa: F401

# isort: off  (the modules register their commands in this order, which is the order of `upcycle --help`)
from .common import app

# isort: on

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
