"""Errors that carry an actionable message.

Every failure caused by the user's input (a file, a column, a checkpoint, a flag) raises a subclass of
:class:`UpcycleError`. The CLI prints its message without a traceback and exits with status 2.
"""

from __future__ import annotations

import os


class UpcycleError(Exception):
    """Base class: the message says what was wrong and how to fix it."""


class TaskError(UpcycleError):
    """A dataset could not be loaded or fails validation (missing column, empty split, bad labels)."""


class CheckpointError(UpcycleError):
    """A checkpoint could not be resolved, read or saved (missing files, pickle weights, hub offline)."""


class StoreError(UpcycleError):
    """The results database is unreadable or from an incompatible version."""


class MergeError(UpcycleError):
    """Checkpoints cannot be merged as asked (mismatched shapes, non-finite values, bad parameters)."""


class ConfigError(UpcycleError):
    """A protocol or option value is invalid."""


def offline_hint(*variables: str) -> str:
    """`` Offline mode is on (NAME=1).`` for the first of ``variables`` set to 1, else an empty string."""
    for name in variables:
        if os.environ.get(name) == "1":
            return f" Offline mode is on ({name}=1)."
    return ""
