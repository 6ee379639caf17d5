"""The committed MiniLM recycling grid as a store, rebuilt from its committed files.

The grid's own store is not committed (its experts' weights are hours of CPU), so what needs the grid but not the
weights (the leaderboard site, and the test that regenerates the committed report byte for byte) rebuilds it
from what is: ``benchmarks/results/{PREFIX}.csv`` (every finetune score, with the checkpoints' fingerprints) as
the bench ``recycling10-minilm``, the experts' source tasks from the committed leaderboard, and their lineage
(finetuned from MiniLM) in the zoo. ``PREFIX`` and ``PROTOCOL`` name the headline grid (see
``benchmarks/recycling_minilm.sh``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from upcycle import FinetuneResult, Store
from upcycle.checkpoints import CheckpointRef
from upcycle.protocols import get_protocol
from upcycle.ranking import Bench, Candidate
from upcycle.tasks import TaskRef, load_suite

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PREFIX = "recycling_minilm_converged"  # the headline grid's files: PREFIX.csv, PREFIX_leaderboard.md, PREFIX_analysis.*
PROTOCOL = "converged"  # the preset it was measured under, with bf16 training (recycling_minilm.sh: "converged+")
BENCH = "recycling10-minilm"
ARCH = "bert-L6-H384-V30522"
EXPERTS = "runs/recycling_minilm_converged/experts"  # where benchmarks/recycling_minilm.sh saves them


def source_tasks(prefix: str = PREFIX) -> dict[str, str]:
    """Candidate name -> source task, from the committed leaderboard's rows."""
    lines = (RESULTS / f"{prefix}_leaderboard.md").read_text().splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| ")]
    return {cells[1]: cells[2] for cells in rows[1:] if cells[0].strip("| ").isdigit()}


def rebuild_store(path: Path, prefix: str = PREFIX, protocol: str = PROTOCOL) -> Store:
    """The committed grid as a store at ``path``: its bench, its finetune scores, its zoo with lineage."""
    grid = pd.read_csv(RESULTS / f"{prefix}.csv")
    prints = dict(zip(grid["candidate"], grid["fingerprint"], strict=False))
    suite = load_suite(str(REPO / "benchmarks" / "suites" / "recycling_minilm.yaml"))
    sources = source_tasks(prefix)

    def candidate(name: str, source: str | None = None) -> Candidate:
        reference = "minilm" if source is None else f"{EXPERTS}/{name}"
        return Candidate(checkpoint=CheckpointRef(reference=reference, name=name, fingerprint=prints[name],
                                                  model_type="bert"), source_task=source)

    bench = Bench(
        name=BENCH, arch=ARCH, base=candidate("minilm"),
        candidates=tuple(candidate(name, sources[name]) for name in sorted(sources)),
        targets=tuple(TaskRef(source=name, name=name, fingerprint=f"task:{name}") for name in suite.targets),
        seeds=(0, 1), protocol=get_protocol(protocol, {"train_precision": "bf16"}),
        overlap_groups=tuple(tuple(sorted(group)) for group in suite.overlap_groups),
    )
    store = Store(path)
    store.put_bench(bench.name, bench.arch, bench.model_dump_json())
    for member in (bench.base, *bench.candidates):
        reference = member.checkpoint
        store.put_checkpoint(fingerprint=reference.fingerprint, name=reference.name, path=reference.reference,
                             arch=ARCH, model_type="bert", source_task=member.source_task,
                             base_fingerprint=None if member is bench.base else bench.base.checkpoint.fingerprint)
    by_name = {c.checkpoint.name: c for c in (bench.base, *bench.candidates)}
    targets = {t.name: t for t in bench.targets}
    for row in grid.itertuples():
        spec = bench.spec(by_name[row.candidate], targets[row.target], int(row.seed))
        store.put_result(spec, FinetuneResult(
            key=spec.key(), task_name=row.target, base_name=row.candidate, seed=int(row.seed),
            protocol=bench.protocol.name, metric=row.metric, score=float(row.score),
            metrics={row.metric: float(row.score)}, n_train=0, n_test=0, epochs_run=bench.protocol.epochs,
            train_seconds=0.0, eval_seconds=0.0, train_examples_per_s=0.0, eval_examples_per_s=0.0,
            eval_precision="bf16", versions={}, created_at="2026-01-01T00:00:00+00:00"))
    return store
