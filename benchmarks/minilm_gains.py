"""Build the gains file shipped in the package (``src/upcycle/data/minilm_recycling_gains.json``) from the
committed MiniLM grid (``benchmarks/results/{PREFIX}.csv``, the headline grid named in ``committed_grid.py``), so a
fresh store's ``select`` knows the committed experts' average gains. Regenerable and deterministic:

    .venv/bin/python benchmarks/minilm_gains.py            # write the file
    .venv/bin/python benchmarks/minilm_gains.py --check    # exit 1 if the shipped file is out of date

The CSV holds the raw cells (candidate, fingerprint, target, seed, metric, score); the vanilla base is the row
named ``minilm`` and each expert is ``minilm-<source task>`` (see ``benchmarks/recycling_minilm.sh``). Gains are
computed exactly as the leaderboard computes them (:func:`upcycle.ranking.gain_matrix`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from committed_grid import PREFIX, PROTOCOL, RESULTS

from upcycle.protocols import Protocol, get_protocol
from upcycle.ranking.gainsfile import ALIAS_HUB_IDS, FORMAT, VERSION, BaseInfo, GainsFile, gain_set_from_grid
from upcycle.report import write_atomic

ROOT = Path(__file__).resolve().parents[1]
GRID = RESULTS / f"{PREFIX}.csv"
OUT = ROOT / "src" / "upcycle" / "data" / "minilm_recycling_gains.json"
BASE = "minilm"
ARCH = "bert-L6-H384-V30522"  # the committed leaderboard's architecture key (recycling_minilm_leaderboard.md)
TARGETS = ["cb", "wnli", "cola", "mrpc", "stsb", "poem_sentiment", "rotten_tomatoes", "sst5", "trec_fine",
           "tweet_eval_irony"]  # benchmarks/suites/recycling_minilm.yaml, in its order


def describe(protocol: Protocol) -> str:
    """``quick+ (1000 train / 1000 eval examples, 2 epochs, batch 32, lr 5e-05, train bf16)``: what a gain was
    measured under."""
    epochs = (f"up to {protocol.epochs} epochs, early stopping (patience {protocol.early_stopping_patience})"
              if protocol.early_stopping_patience else f"{protocol.epochs} epochs")
    return (f"{protocol.name} ({protocol.max_train} train / {protocol.max_eval} eval examples, {epochs}, batch "
            f"{protocol.batch_size}, lr {protocol.learning_rate}, train {protocol.train_precision})")


SOURCE = (f"upcycle committed grid recycling10-minilm (benchmarks/results/{PREFIX}.csv), protocol "
          f"{describe(get_protocol(PROTOCOL, {'train_precision': 'bf16'}))}, seeds [0, 1]; experts built "
          "by `zoo build --set max_train=3000 --set train_precision=bf16` (benchmarks/recycling_minilm.sh)")
LICENSE = "Apache-2.0 (upcycle); measured on the shared datasets, each under its own license"


def build(grid_path: Path = GRID) -> GainsFile:
    cells = pd.read_csv(grid_path)
    cells["is_base"] = cells["candidate"] == BASE
    cells["source_task"] = cells["candidate"].where(~cells["is_base"]).str.removeprefix(f"{BASE}-")
    [fingerprint] = cells.loc[cells["is_base"], "fingerprint"].unique()
    if sorted(cells["target"].unique()) != sorted(TARGETS):
        raise SystemExit(f"{grid_path}: targets {sorted(cells['target'].unique())} differ from {TARGETS}")
    runs = cells["seed"].nunique()
    base = BaseInfo(name=BASE, hub_id=ALIAS_HUB_IDS[BASE], fingerprint=fingerprint, runs=runs)
    gain_set = gain_set_from_grid(cells, arch=ARCH, base=base, targets=TARGETS, runs=runs)
    return GainsFile(format=FORMAT, version=VERSION, source=SOURCE, license=LICENSE, sets=[gain_set],
                     description=f"The committed MiniLM leaderboard (benchmarks/results/{PREFIX}_leaderboard"
                                 ".md) as gains: each expert's gain over vanilla MiniLM per target, mean of 2 seeds.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the shipped file")
    text = build().to_json()
    if parser.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is out of date: run benchmarks/minilm_gains.py")
        print(f"{OUT.relative_to(ROOT)} is up to date")
        return
    write_atomic(OUT, text)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
