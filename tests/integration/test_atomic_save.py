"""A folder replaced by ``atomic_directory`` is never missing or half-written, wherever a kill -9 lands."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from upcycle.checkpoints.saving import exchange

# Run in a child process: replace TARGET (holding old.txt) by a folder holding new-1.txt and new-2.txt, and
# SIGKILL the child at one point of the save: mid-write, at the Nth os.replace, at the exchange, or at the
# clean-up after it. Each hook fires before the real call.
SCRIPT = r"""
import os, signal, sys
from pathlib import Path
import upcycle.checkpoints.saving as saving

target, point = Path(sys.argv[1]), sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
calls = {"replace": 0}
real_replace, real_exchange, real_rmtree = saving.os.replace, saving.exchange, saving.shutil.rmtree

def replace(*args, **kwargs):
    calls["replace"] += 1
    if point == f"replace#{calls['replace']}":
        die()
    return real_replace(*args, **kwargs)

def exchange(*args):
    if point == "exchange":
        die()
    return real_exchange(*args)

def rmtree(*args, **kwargs):
    if point == "cleanup":
        die()
    return real_rmtree(*args, **kwargs)

saving.os.replace, saving.exchange, saving.shutil.rmtree = replace, exchange, rmtree
with saving.atomic_directory(target, overwrite=True) as staging:
    (staging / "new-1.txt").write_text("new")
    if point == "write":
        die()
    (staging / "new-2.txt").write_text("new")
"""
OLD, NEW = {"old.txt"}, {"new-1.txt", "new-2.txt"}


@pytest.mark.parametrize("point", ["write", "exchange", "replace#1", "replace#2", "cleanup", "none"])
def test_a_kill_at_any_point_leaves_the_old_folder_or_the_new_one(tmp_path, point):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(target), point], capture_output=True, text=True)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr  # finished, or killed where the hook fired
    assert target.is_dir(), f"killed at {point}: the target is missing"
    assert {p.name for p in target.iterdir()} in (OLD, NEW), f"killed at {point}: a mixed or half folder"
    if point in ("none", "cleanup"):
        assert {p.name for p in target.iterdir()} == NEW


def test_this_system_swaps_folders_atomically(tmp_path):
    """The guarantee above rests on renameat2(RENAME_EXCHANGE); where it is missing the swap takes two renames."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "from-a").write_text("")
    if not exchange(first, second):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: replacing a folder falls back to two renames")
    assert [p.name for p in second.iterdir()] == ["from-a"] and list(first.iterdir()) == []
