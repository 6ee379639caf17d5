"""Meta-training speed: a step's rows run in passes cut by length, against one padded pass per step.

Anchor: ``micro_batch_tokens=None``, one forward and backward pass over all of a step's rows, each padded to the
step's longest (what a plain training loop over a collated batch does). Arm: the default, rows sorted by length
and run in passes of at most ``MICRO_BATCH_TOKENS`` padded tokens, gradients summed. Same model
(SmolLM2-135M-Instruct, fp32, LoRA as ``flip_train`` sets it), same examples and rows (the meta-training tasks of
``benchmarks/scoring_smollm2.py``, 100 examples each), same steps, for both objectives (``flipped``: the gold
and up to 4 wrong options per example; ``direct``: the gold option).

The two runs must compute the same objective: step 1's losses must agree within 1e-4 (LoRA starts as the
identity, so dropout cannot move them there; later steps differ by dropout masks, drawn per pass). Each run is a
fresh process, so its peak memory (max RSS) is its own; arms alternate over ``--repeats``, so machine drift hits
both alike. Reported per objective: the median and range of the per-repeat ratios of tokens/s (real tokens,
counted the same way in both), and each arm's peak memory.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/flip_train_speed.py --steps 5 --repeats 2

writes ``benchmarks/results/flip_train_speed.json`` (key ``speedup``: the median ratio over both objectives).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))  # the scoring benchmark's task split

from scoring_smollm2 import DATA, META_TRAIN, ROOT  # noqa: E402

from upcycle.report import write_atomic  # noqa: E402
from upcycle.scoring.flip_training import MICRO_BATCH_TOKENS  # noqa: E402

ARMS = ("one-pass", "length-groups")  # one pass per step (the anchor); passes of at most --budget padded tokens
OBJECTIVES = ("flipped", "direct")


def one_run(objective: str, arm: str, steps: int, examples: int, budget: int) -> dict:
    """Train ``steps`` steps in this process and return the cost; called in a child process per run."""
    from upcycle.scoring import flip_train

    with tempfile.TemporaryDirectory() as folder:
        result = flip_train("smollm2", [DATA / t for t in META_TRAIN], Path(folder) / "out", objective=objective,
                            steps=steps, examples_per_task=examples, device="cpu",
                            micro_batch_tokens=None if arm == "one-pass" else budget)
    return {"objective": objective, "arm": arm, "steps": steps, "tokens": result.tokens,
            "seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
            "first_loss": result.loss_curve[0], "loss_curve": list(result.loss_curve),
            "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--examples-per-task", type=int, default=100)
    parser.add_argument("--budget", type=int, default=MICRO_BATCH_TOKENS,
                        help="The length-groups arm's micro_batch_tokens (default: flip_train's).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flip_train_speed.json")
    parser.add_argument("--child", nargs=2, metavar=("OBJECTIVE", "ARM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(*args.child, args.steps, args.examples_per_task, args.budget)))
        return

    runs = []
    for repeat in range(args.repeats):
        for objective in OBJECTIVES:
            for arm in (ARMS if repeat % 2 == 0 else reversed(ARMS)):  # alternate which arm runs first
                done = subprocess.run([sys.executable, __file__, "--child", objective, arm, "--steps",
                                       str(args.steps), "--examples-per-task", str(args.examples_per_task),
                                       "--budget", str(args.budget)],
                                      capture_output=True, text=True, check=True)
                run = {**json.loads(done.stdout.strip().splitlines()[-1]), "repeat": repeat}
                runs.append(run)
                print(f"repeat {repeat} {objective:8s} {arm:14s}: {run['tokens_per_second']:6.1f} tokens/s, "
                      f"{run['seconds']:6.1f} s, peak {run['max_rss_gib']:.1f} GiB, first loss "
                      f"{run['first_loss']:.5f}", flush=True)

    summary = {}
    for objective in OBJECTIVES:
        mine = [r for r in runs if r["objective"] == objective]
        pairs = [({r["arm"]: r for r in mine if r["repeat"] == k}) for k in range(args.repeats)]
        for pair in pairs:  # the same objective: equal tokens, equal first-step loss
            assert pair["one-pass"]["tokens"] == pair["length-groups"]["tokens"]
            assert abs(pair["one-pass"]["first_loss"] - pair["length-groups"]["first_loss"]) < 1e-4
        ratios = [p["length-groups"]["tokens_per_second"] / p["one-pass"]["tokens_per_second"] for p in pairs]
        summary[objective] = {
            "speedup_median": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
            "tokens_per_second": {arm: statistics.median(r["tokens_per_second"] for r in mine if r["arm"] == arm)
                                  for arm in ARMS},
            "peak_rss_gib": {arm: max(r["max_rss_gib"] for r in mine if r["arm"] == arm) for arm in ARMS},
        }
    ratios = [summary[o]["speedup_median"] for o in OBJECTIVES]
    report = {
        "speedup": statistics.median(ratios),
        "anchor": "one padded forward/backward pass per step (micro_batch_tokens=None)",
        "arm": f"rows sorted by length, passes of at most {args.budget} padded tokens"
               + (" (the default)" if args.budget == MICRO_BATCH_TOKENS else ""),
        "model": "smollm2 (SmolLM2-135M-Instruct, fp32, LoRA r8 all-linear)", "tasks": META_TRAIN,
        "settings": {"budget": args.budget, "steps": args.steps, "repeats": args.repeats,
                     "examples_per_task": args.examples_per_task, "batch_size": 8, "max_wrong": 4},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": "upcycle's default"},
        "objectives": summary, "runs": runs,
        "command": f"HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/flip_train_speed.py --steps {args.steps} "
                   f"--repeats {args.repeats}",
    }
    write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
