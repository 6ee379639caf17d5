"""Errors that carry an actionable message.

Every failure caused by the user's input (a file, a column, a checkpoint, a flag) raises a subclass of
:class:`UpcycleError`. The CLI prints its message without a traceback and exits with status 2.
"""

from __future__ import annotations

from pydantic import ValidationError


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


class TemplateError(UpcycleError):
    """A prompt template is unusable for a task (bad YAML or Jinja, a missing column, a bad verbalizer)."""


def validation_problems(error: ValidationError, where: str = "") -> str:
    """pydantic's errors as one line: ``field.path: message; other: message`` (``where`` names a whole-model
    error, whose location is empty)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or where}: {e['msg']}" for e in error.errors())
