"""The leaderboard site of the committed MiniLM results (``make site``): ``site/index.html``.

The recycling grid's store is not committed (its experts' weights are hours of CPU), so the store is rebuilt in a
temporary folder from what is: ``benchmarks/results/recycling_minilm.csv`` (every finetune score, with the
checkpoints' fingerprints) as the bench ``recycling10-minilm``, the experts' source tasks from the committed
leaderboard, and their lineage (finetuned from MiniLM) in the zoo. ``tests/integration/test_committed_report.py``
checks that such a store regenerates the committed leaderboard and analysis byte for byte. Then ``upcycle.build_site``
writes the site with the committed selection, merge and fusion results (``--results benchmarks/results``).

    python benchmarks/site_minilm.py --out site [--screenshot docs/site.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from upcycle import FinetuneResult, Store
from upcycle.checkpoints import CheckpointRef
from upcycle.protocols import get_protocol
from upcycle.ranking import Bench, Candidate
from upcycle.report.site import build_site
from upcycle.tasks import TaskRef, load_suite

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARCH = "bert-L6-H384-V30522"
EXPERTS = "runs/recycling_minilm/experts"  # where benchmarks/recycling_minilm.sh saves them


def source_tasks() -> dict[str, str]:
    """Candidate name -> source task, from the committed leaderboard's rows."""
    lines = (RESULTS / "recycling_minilm_leaderboard.md").read_text().splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| ")]
    return {cells[1]: cells[2] for cells in rows[1:] if cells[0].strip("| ").isdigit()}


def rebuild_store(path: Path) -> Store:
    """The committed grid as a store: its bench, its 248 finetune scores, its zoo with lineage."""
    grid = pd.read_csv(RESULTS / "recycling_minilm.csv")
    prints = dict(zip(grid["candidate"], grid["fingerprint"], strict=False))
    suite = load_suite(str(REPO / "benchmarks" / "suites" / "recycling_minilm.yaml"))
    sources = source_tasks()

    def candidate(name: str, source: str | None = None) -> Candidate:
        reference = "minilm" if source is None else f"{EXPERTS}/{name}"
        return Candidate(checkpoint=CheckpointRef(reference=reference, name=name, fingerprint=prints[name],
                                                  model_type="bert"), source_task=source)

    bench = Bench(
        name="recycling10-minilm", arch=ARCH, base=candidate("minilm"),
        candidates=tuple(candidate(name, sources[name]) for name in sorted(sources)),
        targets=tuple(TaskRef(source=name, name=name, fingerprint=f"task:{name}") for name in suite.targets),
        seeds=(0, 1), protocol=get_protocol("quick", {"train_precision": "bf16"}),
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
            key=spec.key(), task_name=row.target, base_name=row.candidate, seed=int(row.seed), protocol="quick+",
            metric=row.metric, score=float(row.score), metrics={row.metric: float(row.score)}, n_train=0, n_test=0,
            epochs_run=2, train_seconds=0.0, eval_seconds=0.0, train_examples_per_s=0.0, eval_examples_per_s=0.0,
            eval_precision="bf16", versions={}, created_at="2026-01-01T00:00:00+00:00"))
    return store


def screenshot(page: Path, png: Path, *, width: int = 1280, height: int = 1500) -> None:
    """A PNG of ``page`` in headless Chromium (Debian's ``chromium``)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("headless Chromium is needed for --screenshot: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={shot}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        # 256 colours: a third of the size, the same picture to the eye (the README's copy stays small)
        Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "site")
    parser.add_argument("--results", type=Path, default=Path(os.path.relpath(RESULTS)))
    parser.add_argument("--screenshot", type=Path, help="Also save a PNG of the bench page here.")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, rebuild_store(Path(folder) / "recycling_minilm.db") as store:
        site = build_site(store, args.out, results=[args.results])
    print(f"wrote {args.out}/index.html: {len(site.benches)} bench(es), {len(site.models)} checkpoint pages, "
          f"{len(site.selections)} selection, {len(site.merges)} merge, {len(site.fusions)} fusion result(s) in "
          f"{time.perf_counter() - started:.1f}s")
    if args.screenshot:
        page = args.out / f"{site.benches[0].slug}.html"
        screenshot(page, args.screenshot)
        print(f"wrote {args.screenshot} (a screenshot of {page})")


if __name__ == "__main__":
    main()
