"""The Hugging Face hub's edge: which references read as hub ids, and what to say when offline.

Checkpoints and tasks both resolve a reference as a local path first, then an alias or a data-dir name, and
only then as a hub id; the one rule for "looks like a hub id" lives here so the two loaders agree.
"""

from __future__ import annotations

import os


def looks_like_hub_id(text: str, *, bare_name: bool = False) -> bool:
    """``org/name`` (a ``:config`` or ``:revision`` suffix allowed), or a bare ``name`` where ``bare_name`` (hub
    datasets such as ``imdb``); never something that reads as a path (``./x``, ``/x``, ``~/x``, ``.x``)."""
    if text.startswith((".", "/", "~")):
        return False
    parts = text.split(":", 1)[0].split("/")
    return (len(parts) == 2 or (bare_name and len(parts) == 1)) and all(
        part and not part.startswith(".") for part in parts)


def offline_hint(*variables: str) -> str:
    """`` Offline mode is on (NAME=1).`` for the first of ``variables`` set to 1, else an empty string."""
    for name in variables:
        if os.environ.get(name) == "1":
            return f" Offline mode is on ({name}=1)."
    return ""
