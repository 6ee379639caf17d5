"""Report files appear whole or not at all: written beside their final name, then renamed over it."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write ``text`` (or bytes) to ``path`` through a temporary file in the same folder and one ``os.replace``; a
    crash or interruption leaves either the old file or the new one. Permissions follow the umask (readable by
    others where the umask allows), unlike :func:`tempfile.mkstemp`'s private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        staging.write_bytes(text) if isinstance(text, bytes) else staging.write_text(text)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path
