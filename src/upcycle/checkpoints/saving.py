"""Atomic saving: a checkpoint folder appears whole, under its final name, or not at all."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .loading import quiet_transformers
from .resolve import PROVENANCE_FILE, Checkpoint, resolve_checkpoint


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it is renamed to ``target`` in one step.

    On any error (or interruption) the temporary folder is removed and ``target`` is untouched. Replacing an
    existing ``target`` swaps the two folders in one atomic step where Linux allows it, so a process killed at any
    moment leaves either the old folder or the new one under ``target``, never nothing. The result has
    the permissions of an ordinary folder (:func:`share_like_the_umask`), not the temporary folder's private ones.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise CheckpointError(f"{target}: already exists; choose another folder or remove it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        share_like_the_umask(staging)
        if not target.exists():
            os.replace(staging, target)
        elif exchange(staging, target):  # one step: the target is never missing; staging now holds the old one
            shutil.rmtree(staging, ignore_errors=True)
            return
        else:  # no atomic exchange on this system or file system: two renames, the target briefly missing
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``, glibc 2.28+). Returns False where
    the system or the file system cannot, so the caller falls back; raises OSError for any other failure."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_like_the_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions a plain ``mkdir`` and ``open`` would have had (0755
    and 0644 under umask 022). ``tempfile.mkdtemp`` makes 0700 folders and some writers (transformers' safetensors
    save) make 0600 files; left as they are, a colleague or a Ray worker running as another user on a shared disk
    could not read a saved model."""
    mask = current_umask()
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(root) / name, 0o666 & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def save_checkpoint(model, tokenizer, target: Path, provenance: dict[str, Any], overwrite: bool = False) -> Checkpoint:
    """Write model (safetensors), tokenizer and ``upcycle.json`` provenance atomically to ``target``."""
    with atomic_directory(Path(target), overwrite=overwrite) as staging, quiet_transformers():
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return resolve_checkpoint(target)
