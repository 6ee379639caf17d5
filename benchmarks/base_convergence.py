"""Does a protocol train the vanilla base to convergence? (issue 17, item 1)

The gain of a checkpoint over the vanilla base is only a property of the checkpoint when the base itself is
trained properly: under the quick protocol (1000 examples, 2 epochs) vanilla MiniLM has not converged on several
targets (trec_fine 0.11, stsb 0.22), so a large part of the committed gains is how fast a head is learned, not a
better starting point.

Anchor: a long **reference** run of vanilla MiniLM on each of the committed grid's 10 targets (up to 5000 train
examples, up to 10 epochs, the best validation epoch kept, patience 3), 2 seeds. Against it, each **candidate
protocol** runs the same targets and seeds. For each protocol the script reports, per target, the mean score, the
gap to the reference (points), the reference's seed-to-seed spread, and the training cost (seconds, examples x
epochs actually run), then the two criteria of the issue: the mean gap over targets (within 2 points) and no
target short of the reference by more than that target's seed spread.

Choosing a protocol on the same targets it is judged on would flatter it, so the choice is nested: the cheapest
candidate (fewest examples x epochs trained) meeting both criteria on one half of the targets (``--choose-on``) is
then judged on the other half, and the full table is reported beside it. The per-target criterion is read two
ways (``judge``): the issue's literal rule, and a noise-aware one that the choice uses.

Every finetune is stored in ``--db`` (resumable: rerun the same command after an interruption and only the
missing runs train; results are keyed by spec, so the GPU machine, when lent, can fill the same database).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/base_convergence.py --executor pool

writes ``benchmarks/results/base_convergence.json`` (and prints the table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from upcycle.execute import make_executor, pending, run_specs  # noqa: E402
from upcycle.protocols import PRESETS  # noqa: E402
from upcycle.report import write_atomic  # noqa: E402
from upcycle.specs import FinetuneSpec  # noqa: E402
from upcycle.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
TARGETS = ["cb", "wnli", "cola", "mrpc", "stsb", "poem_sentiment", "rotten_tomatoes", "sst5", "trec_fine",
           "tweet_eval_irony"]  # benchmarks/suites/recycling_minilm.yaml
BF16 = {"train_precision": "bf16"}  # the committed grid's setting (quick+)
ANCHOR = "quick+"  # the committed grid's protocol: judged like the others, left out of the pooled seed deviation
REFERENCE = {**BF16, "max_train": 5000, "epochs": 10, "early_stopping_patience": 3}
CANDIDATES = {  # the choice takes the one that meets both criteria training on the fewest examples x epochs
    ANCHOR: {**BF16},
    "lr1e-4 e5 p2 n2000": {**BF16, "max_train": 2000, "epochs": 5, "learning_rate": 1e-4, "early_stopping_patience": 2},
    # after the first two on the choose-on targets: 2000 examples left cola and stsb short; more data, fewer epochs
    "lr1e-4 e4 p1 n5000": {**BF16, "max_train": 5000, "epochs": 4, "learning_rate": 1e-4, "early_stopping_patience": 1},
    # after "lr1e-4 e4 p1 n5000" on the choose-on targets: cola ran all 4 epochs and stayed short (the reference
    # kept 8-9 epochs there at half the rate); a higher rate at the same cost, or more epochs
    "lr2e-4 e4 p1 n5000": {**BF16, "max_train": 5000, "epochs": 4, "learning_rate": 2e-4, "early_stopping_patience": 1},
    "lr1e-4 e6 p1 n5000": {**BF16, "max_train": 5000, "epochs": 6, "learning_rate": 1e-4, "early_stopping_patience": 1},
    # on cola, both stayed short (lr 2e-4: 0.690, stopped after 2-3 epochs; 6 epochs: 0.698) while the reference,
    # at lr 5e-5 with patience 3, reached 0.714: the reference's rate, with less patience and fewer epochs
    "lr5e-5 e6 p2 n5000": {**BF16, "max_train": 5000, "epochs": 6, "early_stopping_patience": 2},  # trec_fine: 0.740
    "lr5e-5 e8 p2 n5000": {**BF16, "max_train": 5000, "epochs": 8, "early_stopping_patience": 2},
}
# candidates screened on some choose-on targets and rejected there: a rerun does not train them further
SCREENED = {"lr2e-4 e4 p1 n5000": ["cola", "trec_fine"], "lr1e-4 e6 p1 n5000": ["cola", "trec_fine"],
            "lr5e-5 e6 p2 n5000": ["cola", "trec_fine"]}


def specs_for(overrides: dict, seeds: int, targets: list[str]) -> list[FinetuneSpec]:
    return [FinetuneSpec.create("minilm", str(DATA / target), seed=seed, protocol=PRESETS["quick"],
                                overrides=overrides) for target in targets for seed in range(seeds)]


def table(store: Store, specs: list[FinetuneSpec]) -> dict[str, dict]:
    """Per target: the stored scores by seed, their mean and spread, and the training cost."""
    rows: dict[str, dict] = {}
    for spec in specs:
        result = store.get_result(spec.key())
        if result is None:
            continue
        row = rows.setdefault(result.task_name, {"scores": {}, "train_seconds": 0.0, "example_epochs": 0})
        row["scores"][spec.seed] = result.score
        row["train_seconds"] += result.train_seconds
        row["example_epochs"] += result.n_train * result.epochs_run
        row["metric"] = result.metric
    for row in rows.values():
        values = list(row["scores"].values())
        row["mean"] = statistics.fmean(values)
        row["spread"] = max(values) - min(values) if len(values) > 1 else None
    return rows


def pooled_seed_sd(tables: dict[str, dict[str, dict]], target: str) -> float | None:
    """The seed-to-seed standard deviation of one finetune on ``target`` (score units), pooled over the arms in
    ``tables`` that ran it with 2+ seeds: the mean of their sample variances. One arm's two seeds are one degree of
    freedom (cb's reference seeds agree exactly); protocols that train the base about as well move with seeds about
    as much, so the caller leaves out the quick protocol, whose undertrained runs swing widely (stsb 0.105 vs
    0.054)."""
    variances = [statistics.variance(row["scores"].values()) for table in tables.values()
                 if (row := table.get(target)) and len(row["scores"]) > 1]
    return statistics.fmean(variances) ** 0.5 if variances else None


def judge(protocol: dict[str, dict], reference: dict[str, dict], targets: list[str],
          seed_sd: dict[str, float | None] | None = None, z: float = 3.0) -> dict:
    """The issue's criteria on ``targets``: the mean gap (points) to the reference within 2 points, and no target
    short of the reference by more than its seed spread.

    Two readings of the second one are reported. ``short_beyond_seed_spread`` is the issue's, literally: the
    reference's two seeds' range. Taken literally it fails the reference itself: two fresh seeds of the reference
    fall short of two others by more than their range on a target with probability 0.20 (P(Z1 > sqrt(2)|Z2|)
    = arctan(1/sqrt(2)) / pi), so on all of 10 targets with probability 0.8^10 = 0.11. ``short_beyond_noise``
    allows ``z`` standard deviations of the difference of the two arms' seed means (``seed_sd`` pooled over arms):
    for a protocol as good as the reference, about 1 chance in 700 per target and 1 in 70 over 10 (somewhat more,
    since the deviation is estimated from few seeds)."""
    shared = [t for t in targets if t in protocol and t in reference]
    gaps = {t: 100 * (reference[t]["mean"] - protocol[t]["mean"]) for t in shared}
    beyond = [t for t in shared if gaps[t] > 100 * (reference[t]["spread"] or 0.0)]
    tolerance = {t: 100 * z * seed_sd[t] * (1 / len(reference[t]["scores"]) + 1 / len(protocol[t]["scores"])) ** 0.5
                 for t in shared if seed_sd and seed_sd.get(t) is not None}
    beyond_noise = [t for t in shared if gaps[t] > tolerance.get(t, 0.0)]
    mean_gap = statistics.fmean(gaps.values()) if gaps else None
    mean_ok = mean_gap is not None and len(shared) == len(targets) and mean_gap <= 2.0
    return {"targets": shared, "gap_points": gaps, "mean_gap_points": mean_gap,
            "short_beyond_seed_spread": beyond, "meets_literal": mean_ok and not beyond,
            "noise_tolerance_points": tolerance, "short_beyond_noise": beyond_noise,
            "meets": mean_ok and not beyond_noise,
            "train_seconds": sum(protocol[t]["train_seconds"] for t in shared),
            "example_epochs": sum(protocol[t]["example_epochs"] for t in shared)}


def choose(judged: dict[str, dict]) -> str | None:
    """The candidate meeting both criteria on the choose-on targets that trained on the fewest examples x epochs
    there (a cost that does not depend on the machine's load), or None."""
    meeting = [name for name, parts in judged.items() if parts["choose_on"]["meets"]]
    return min(meeting, key=lambda name: judged[name]["choose_on"]["example_epochs"], default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=ROOT / "runs" / "base_convergence" / "upcycle.db")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--only", default="", help="Run only these arms (comma-separated: reference and/or names).")
    parser.add_argument("--targets", default="", help="Run only these targets (comma-separated; screening a "
                        "candidate on choose-on targets first). The report covers everything stored.")
    parser.add_argument("--choose-on", default="cb,cola,stsb,rotten_tomatoes,trec_fine",
                        help="Targets the protocol is chosen on; it is judged on the others.")
    parser.add_argument("--report-only", action="store_true", help="Report what is stored; train nothing.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "base_convergence.json")
    args = parser.parse_args()

    arms = {"reference": REFERENCE, **CANDIDATES}
    chosen_arms = [name for name in args.only.split(",") if name] or list(arms)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    with Store(args.db) as store:
        if not args.report_only:
            executor = make_executor(args.executor, jobs=args.jobs) if args.executor != "local" else None
            for name in chosen_arms:
                targets = [t for t in args.targets.split(",") if t] or SCREENED.get(name, TARGETS)
                specs = specs_for(arms[name], args.seeds, targets)
                todo = pending(specs, store)
                print(f"{name}: {len(specs) - len(todo)} stored, {len(todo)} to run", flush=True)
                started = time.perf_counter()
                for result in run_specs(specs, store, executor):
                    print(f"  {name} {result.task_name} seed {result.seed}: {result.metric} {result.score:.4f} "
                          f"({result.epochs_run} epochs, {result.train_seconds:.0f}s, "
                          f"{time.perf_counter() - started:.0f}s so far)", flush=True)
        tables = {name: table(store, specs_for(arms[name], args.seeds, TARGETS)) for name in arms}
    reference = tables["reference"]
    choose_on = [t for t in args.choose_on.split(",") if t]
    held_out = [t for t in TARGETS if t not in choose_on]
    converging = {name: rows for name, rows in tables.items() if name != ANCHOR}  # see pooled_seed_sd
    seed_sd = {t: pooled_seed_sd(converging, t) for t in TARGETS}
    judged = {name: {part: judge(tables[name], reference, targets, seed_sd)
                     for part, targets in (("all", TARGETS), ("choose_on", choose_on), ("held_out", held_out))}
              for name in CANDIDATES}
    chosen = choose(judged)
    report = {
        "reference": {"overrides": REFERENCE, "per_target": reference},
        "pooled_seed_sd": seed_sd,
        "candidates": {name: {"overrides": CANDIDATES[name], "per_target": tables[name], "judged": judged[name]}
                       for name in CANDIDATES},
        "nested_choice": {"chosen_on": choose_on, "judged_on": held_out, "chosen": chosen,
                          "held_out": judged[chosen]["held_out"] if chosen else None},
        "complete": all(len(tables[name]) == len(TARGETS) for name in arms),
        "setup": {"base": "minilm", "targets": TARGETS, "seeds": args.seeds,
                  "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/base_convergence.py --executor pool"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(report, indent=2, default=str) + "\n")
    for name in CANDIDATES:
        verdict = judged[name]["all"]
        gap = verdict["mean_gap_points"]
        print(f"{name:22s} mean gap {'-' if gap is None else f'{gap:+.2f}'} points over {len(verdict['targets'])} "
              f"targets; short beyond noise: {verdict['short_beyond_noise']}, beyond the reference's seed range: "
              f"{verdict['short_beyond_seed_spread']}; meets: {verdict['meets']} (literal rule: "
              f"{verdict['meets_literal']})")
    print(f"chosen on {choose_on}: {chosen}")


if __name__ == "__main__":
    main()
