"""The committed benchmark results name no machine: paths in them are relative to the repository root."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results"
# an absolute path of some machine: /work/..., /tmp/..., a home folder (Linux, macOS, Windows), a mount
ABSOLUTE = re.compile(r"(?<![\w./-])(/(work|tmp|home|root|Users|mnt|private|var/folders)/|[A-Za-z]:\\Users\\)")


def test_the_pattern_finds_absolute_paths_and_spares_relative_ones_and_urls():
    found = ['"/work/main/runs/x"', "at /tmp/abc", "`/home/me/x`", "(/root/x)", "/Users/me/x", r"C:\Users\me"]
    spared = ["runs/merge_vs_mergekit/full", "https://example.org/home/x", "benchmarks/results/tmp/x", "a/work/b"]
    assert all(ABSOLUTE.search(text) for text in found)
    assert not any(ABSOLUTE.search(text) for text in spared)


def test_no_committed_result_holds_an_absolute_path():
    files = sorted(path for path in RESULTS.rglob("*") if path.is_file())
    assert files, RESULTS
    offending = [f"{path.relative_to(RESULTS)}:{number}: {line.strip()[:120]}"
                 for path in files for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                 if ABSOLUTE.search(line)]
    assert offending == [], "absolute paths in committed results:\n" + "\n".join(offending)
