"""Add the nested leave-one-target-out figure to a selection results file, from the per-target rows it holds.

``upcycle evaluate-selection --out`` writes the ``"nested"`` object (and the report's headline section) itself;
this script is for a file written before it, such as the committed ``benchmarks/results/selection_minilm_quick.json``.
Nothing is re-estimated: the nested choice is made over the file's ``per_target`` rows, so it can only choose
among what those rows hold (that file: one sample size, 128 examples, so estimators only). The JSON gains
``"nested"`` (with a ``note`` saying where it came from), every other key byte for byte as it was; the Markdown
report gains the nested section before its table, which becomes the diagnostic. Rerunning replaces both.

    python benchmarks/selection_nested.py --results benchmarks/results/selection_minilm_quick --examples 128
    python benchmarks/selection_nested.py --results benchmarks/results/selection_minilm --select-by ndcg --dry-run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from upcycle.report import write_atomic
from upcycle.report.selection import nested_json, nested_markdown
from upcycle.selection.evaluation import QUALITY, REFERENCES, nested_selection

DIAGNOSTIC = "## Diagnostic (not nested: every row saw every target)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/selection_minilm_quick"),
                        help="the results' path without suffix (its .json and .md are updated)")
    parser.add_argument("--examples", type=int, default=None,
                        help="the sample size the rows were computed at, for rows that do not record it")
    parser.add_argument("--select-by", default="regret_at_3", choices=QUALITY)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the nested figure (say, chosen by another --select-by) and write nothing")
    args = parser.parse_args()
    path = args.results.with_suffix(".json")
    document = json.loads(path.read_text())
    frame = pd.DataFrame(document["per_target"])
    if args.examples is not None and "examples" not in frame.columns:
        frame["examples"] = [None if name in REFERENCES else args.examples for name in frame["estimator"]]
    nested = nested_selection(frame, metric=args.select_by)
    if args.dry_run:
        summary = nested.summary()
        print(f"nested, chosen by {args.select_by}: Regret@1 {summary['regret_at_1']:.2f}, Regret@3 "
              f"{summary['regret_at_3']:.2f}, NDCG {summary['ndcg']:.3f}; chosen {summary['chosen_counts']}")
        return
    sizes = sorted({int(n) for n in frame["examples"].dropna()}) if "examples" in frame.columns else []
    if len(sizes) == 1:
        held = f"the rows hold one sample size ({sizes[0]} examples), so each fold chose among estimators only"
    elif sizes:
        held = (f"the rows hold sample sizes {', '.join(map(str, sizes))}, so each fold chose the estimator and its "
                "sample size")
    else:
        held = "the rows do not record their sample size, so each fold chose among estimators only"
    document["nested"] = nested_json(nested) | {
        "note": f"computed by benchmarks/selection_nested.py from this file's per_target rows (nothing re-estimated); "
                f"{held}"}
    write_atomic(path, json.dumps(document, indent=2) + "\n")

    report = args.results.with_suffix(".md")
    lines = report.read_text().splitlines()
    if DIAGNOSTIC in lines:  # a rerun: drop the previous nested section
        start = next(i for i, line in enumerate(lines) if line.startswith("## Nested"))
        lines = lines[:start] + lines[lines.index(DIAGNOSTIC) + 2:]
    table = next(i for i, line in enumerate(lines) if line.startswith("| estimator |"))
    section = nested_markdown(nested, targets=int(frame["target"].nunique()))
    note = (f"(Computed from the per-target rows below by `benchmarks/selection_nested.py`, nothing re-estimated: "
            f"{held}.)")
    lines = lines[:table] + section[:-3] + ["", note] + section[-3:] + lines[table:]
    write_atomic(report, "\n".join(lines) + "\n")
    print(f"wrote the nested figure into {path} and {report}: Regret@3 {nested.summary()['regret_at_3']:.2f} "
          f"(in sample {nested.in_sample['regret_at_3']:.2f}), chosen {nested.summary()['chosen_counts']}")


if __name__ == "__main__":
    main()
