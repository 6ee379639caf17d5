"""Scoring speed: upcycle's loglikelihood primitive against one full forward pass per (example, option).

Anchor: ``loglikelihood_unbatched``, what a user writes by hand with transformers and what lm-evaluation-harness
does for a causal model: for each (context, continuation) pair, one forward pass over the whole sequence, logits
at every position, log-softmax, gather the continuation's tokens. Same model (SmolLM2-135M-Instruct, fp32), same
tokenization, same requests; the scores must agree within 1e-4 (asserted), so the speedup is for the same numbers.

Workloads (the shipped templates, the first examples of the test split):
* ``direct`` on sst2 (2 options: the context is shared, only the label runs per option) and on trec_coarse
  (6 options);
* ``flipped`` on sst2 (the input is shared; the label and the instruction run per option);
* ``channel`` on sst2 (nothing is shared: the label comes first; batching alone).

Each arm runs ``--repeats`` times, alternating with the anchor, so machine drift hits both alike; the speedup is
the ratio of the two arms' times on the same requests (equivalently, of their throughput in the anchor's tokens,
the whole sequence of every request). Reported per workload: median and range of the per-repeat ratios.

bf16: the batched primitive under bf16 autocast against fp32 on the same requests: the largest score difference,
how often the predicted option changes, and the speedup. That is what decides whether bf16 may be the default.

    HF_HUB_OFFLINE=1 python benchmarks/scoring_speed.py

writes ``benchmarks/results/scoring_speed.json`` (key ``speedup``: the median ratio over all workloads' repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from upcycle.report import write_atomic  # noqa: E402
from upcycle.scoring.loglikelihood import load_language_model, loglikelihood, loglikelihood_unbatched  # noqa: E402
from upcycle.scoring.methods import METHODS  # noqa: E402
from upcycle.tasks import load_task, template_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
WORKLOADS = [("direct", "sst2"), ("direct", "trec_coarse"), ("flipped", "sst2"), ("channel", "sst2")]


def requests_for(method: str, task_name: str, n: int):
    """The method's requests for the first ``n`` test examples: contexts, continuations, groups, labels, K."""
    task = load_task(DATA / task_name)
    prompts = template_for(task).prompts(task.splits["test"])[:n]
    contexts, continuations, groups = [], [], []
    for index, prompt in enumerate(prompts):
        for context, continuation in METHODS.get(method).requests(prompt):
            contexts.append(context)
            continuations.append(continuation)
            groups.append(index)
    return contexts, continuations, groups, [p.label for p in prompts], len(prompts[0].options)


def timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scoring_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    load_at_start = os.getloadavg()[0]  # other work on the machine slows both arms; the ratio is what is compared
    lm = load_language_model("smollm2", device="cpu")
    lm_bf16 = load_language_model("smollm2", device="cpu", precision="bf16")
    rows, all_ratios = [], []
    for method, task_name in WORKLOADS:
        contexts, continuations, groups, labels, width = requests_for(method, task_name, args.examples)
        reference, _ = timed(lambda: loglikelihood_unbatched(lm, contexts, continuations))  # warm-up + reference
        anchor_tokens = lm.cost.tokens
        lm.cost.tokens = 0
        ratios, anchor_seconds, fast_seconds, bf16_ratios = [], [], [], []
        for _ in range(args.repeats):  # the three arms alternate, so load on the machine hits them alike
            _, slow = timed(lambda: loglikelihood_unbatched(lm, contexts, continuations))
            lm.cost.tokens = 0
            fast, quick = timed(lambda: loglikelihood(lm, contexts, continuations, groups=groups))
            bf16, bf16_seconds = timed(lambda: loglikelihood(lm_bf16, contexts, continuations, groups=groups))
            anchor_seconds.append(slow)
            fast_seconds.append(quick)
            ratios.append(slow / quick)
            bf16_ratios.append(quick / bf16_seconds)
        fast_tokens = lm.cost.tokens
        difference = max(float(np.abs(a - b).max()) for a, b in zip(fast, reference))
        assert difference <= 1e-4, f"{method} on {task_name}: scores differ by {difference}"
        sums = np.array([lp.sum() for lp in fast]).reshape(-1, width)
        sums_bf16 = np.array([lp.sum() for lp in bf16]).reshape(-1, width)
        row = {
            "method": method, "task": task_name, "examples": len(labels), "options": width,
            "requests": len(contexts), "anchor_tokens": anchor_tokens, "primitive_tokens": fast_tokens,
            "anchor_seconds": anchor_seconds, "primitive_seconds": fast_seconds,
            "anchor_tokens_per_s": anchor_tokens / statistics.median(anchor_seconds),
            "primitive_tokens_per_s_in_anchor_tokens": anchor_tokens / statistics.median(fast_seconds),
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "max_abs_difference": difference,
            "bf16": {
                "max_abs_difference_of_option_scores": float(np.abs(sums - sums_bf16).max()),
                "predictions_changed": int((sums.argmax(1) != sums_bf16.argmax(1)).sum()),
                "accuracy_fp32": float((sums.argmax(1) == np.array(labels)).mean()),
                "accuracy_bf16": float((sums_bf16.argmax(1) == np.array(labels)).mean()),
                "speedup_over_fp32_primitive": statistics.median(bf16_ratios),
            },
        }
        rows.append(row)
        all_ratios.extend(ratios)
        print(f"{method:8s} {task_name:12s} {len(contexts):4d} requests: anchor {row['anchor_tokens_per_s']:6.0f} "
              f"tok/s, primitive x{row['speedup_median']:.2f} [{row['speedup_min']:.2f}, {row['speedup_max']:.2f}] "
              f"(max |diff| {difference:.1e}); bf16 x{row['bf16']['speedup_over_fp32_primitive']:.2f}, "
              f"{row['bf16']['predictions_changed']} predictions changed", flush=True)
    result = {
        "speedup": statistics.median(all_ratios),
        "speedup_min": min(all_ratios), "speedup_max": max(all_ratios),
        "anchor": "loglikelihood_unbatched: one full forward pass per (example, option), logits at every position",
        "model": "smollm2 (SmolLM2-135M-Instruct, fp32)", "examples_per_workload": args.examples,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "load_average_at_start": load_at_start,
        "workloads": rows,
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scoring_speed.py",
    }
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"speedup {result['speedup']:.2f} [{result['speedup_min']:.2f}, {result['speedup_max']:.2f}] -> {args.out}")


if __name__ == "__main__":
    main()
