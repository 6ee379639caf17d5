"""Does Flipped meta-training beat DIRECT meta-training on unseen tasks? SmolLM2-135M-Instruct on the shared data.

The claim tested (Ye et al., ICLR 2023, "Guess the Instruction!"): a model meta-trained to generate the instruction
given the input and the label (FLIPPED, with an unlikelihood term for wrong labels) generalises to unseen tasks
better than one meta-trained on the same data to generate the label (DIRECT), most of all on unseen label sets.

Split (T0-style: whole task clusters are held out, and no overlap group of ``upcycle.tasks.OVERLAP_GROUPS`` crosses
it; asserted):
* meta-training: sentiment (sst2, rotten_tomatoes, financial_phrasebank; not imdb, whose reviews would be
  most of the training tokens), emotion (dair_emotion), acceptability (cola),
  paraphrase (mrpc), offensive language (tweet_eval_hate, tweet_eval_offensive);
* unseen evaluation: natural language inference (rte, cb), irony (tweet_eval_irony), topic (ag_news), question
  type (trec_coarse), emotion narratives (isear). A task's label set counts as *unseen* when none of its
  verbalizers is a verbalizer of a meta-training task, *partly seen* when some are (computed from the shipped
  templates and reported per task, not decided by hand).

Arms, each scored on the same evaluation sample (at most ``--eval-examples`` test examples per task, stratified,
seed 0), with the shipped templates and default options (``sum``, no calibration):
* ``smollm2`` untrained, with direct, channel and flipped;
* ``direct-meta``: LoRA meta-training on the meta-training tasks with the DIRECT objective, scored with direct;
* ``flipped-meta``: the same data and steps with the FLIPPED objective (likelihood of the instruction given the
  correct label, unlikelihood given wrong ones), scored with flipped.
Meta-trained arms run ``--seeds`` seeds (data order, sampled wrong labels, LoRA initialisation).
Diagnostic arms, scored after those: direct and flipped with content-free calibration (``+ content-free``), for
the untrained model and both meta-trained ones. Flipped with these templates answered one option for nearly every
example (an instruction that lists the options is likeliest after the option it echoes best); calibration removes
that per-option prior, so these arms say whether anything is left beneath it. Each row counts its predictions per
option, and the summary gives each arm's share of its most predicted option per task.

Intervals: accuracy is averaged over seeds per example; the mean over tasks gets a percentile bootstrap interval
resampling examples within each task (10,000 draws); the flipped-minus-direct difference is bootstrapped paired on
the same resampled examples. Costs: tokens and seconds of each scoring, and of each meta-training.

Resumable: scores live in ``--db`` and trained models in ``--models`` (a finished model is reused, an interrupted
meta-training resumes), so rerunning the command only does what is missing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scoring_smollm2.py

writes ``benchmarks/results/scoring_smollm2.json`` (key ``rows``: one object per model x method x task x seed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from upcycle.report import write_atomic  # noqa: E402
from upcycle.scoring import flip_train, score  # noqa: E402
from upcycle.store import Store  # noqa: E402
from upcycle.tasks import load_task, overlapping, template_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
META_TRAIN = ["sst2", "rotten_tomatoes", "financial_phrasebank", "dair_emotion", "cola", "mrpc", "tweet_eval_hate",
              "tweet_eval_offensive"]
UNSEEN = ["rte", "cb", "tweet_eval_irony", "ag_news", "trec_coarse", "isear"]


def label_sets() -> dict[str, dict]:
    """Per unseen task: its verbalizers, which of them a meta-training task also uses, and the category."""
    seen = {choice.casefold() for name in META_TRAIN for choice in template_for(load_task(DATA / name)).answer_choices}
    sets = {}
    for name in UNSEEN:
        choices = template_for(load_task(DATA / name)).answer_choices
        shared = [c for c in choices if c.casefold() in seen]
        sets[name] = {"answer_choices": list(choices), "seen_in_meta_training": shared,
                      "labels": "unseen" if not shared else ("seen" if len(shared) == len(choices) else "partly seen")}
    return sets


def bootstrap_over_tasks(correct: dict[str, np.ndarray], other: dict[str, np.ndarray] | None = None,
                         draws: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over tasks of accuracy (or of the paired difference with ``other``),
    resampling examples within each task."""
    rng = np.random.default_rng(seed)
    totals = np.zeros(draws)
    point = 0.0
    for task, values in correct.items():
        values = values - (other[task] if other is not None else 0.0)
        picks = rng.integers(0, len(values), (draws, len(values)))
        totals += values[picks].mean(axis=1)
        point += values.mean()
    totals /= len(correct)
    low, high = np.percentile(totals, [2.5, 97.5])
    return float(point / len(correct)), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--examples-per-task", type=int, default=100)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--unlikelihood-weight", type=float, default=None, help="Default: flip_train's.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--db", type=Path, default=ROOT / "runs" / "scoring_smollm2" / "upcycle.db")
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "scoring_smollm2" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scoring_smollm2.json")
    args = parser.parse_args()
    for name in UNSEEN:  # no evaluation task shares data with a meta-training task
        assert not overlapping(name) & set(META_TRAIN), name
    args.db.parent.mkdir(parents=True, exist_ok=True)
    sets = label_sets()
    rows, training = [], []
    with Store(args.db) as store:
        def evaluate(arm: str, model: str, method: str, seed: int | None, calibrate: str = "none") -> None:
            for name in UNSEEN:
                (result,) = score(DATA / name, model, method=method, calibrate=calibrate,
                                  max_examples=args.eval_examples, store=store, device=args.device)
                task = load_task(DATA / name).subsample(None, args.eval_examples, 0)
                labels = np.array([p.label for p in template_for(task).prompts(task.splits["test"])])
                predicted = np.bincount(result.predictions, minlength=result.num_options)
                rows.append({"model": arm, "method": method, "calibrate": calibrate, "task": name, "seed": seed,
                             "accuracy": result.accuracy, "macro_f1": result.macro_f1, "n": result.n,
                             "tokens": result.tokens, "seconds": result.seconds, "device": result.device,
                             "labels": sets[name]["labels"], "predicted_per_option": predicted.tolist(),
                             "correct": (result.predictions == labels).astype(int).tolist()})
                print(f"{arm:13s} {method:8s} {calibrate:12s} {name:17s} seed {seed}: accuracy "
                      f"{result.accuracy:.3f} macro-F1 {result.macro_f1:.3f} predicted {predicted.tolist()}"
                      f"{' (stored)' if result.cached else ''}", flush=True)
            write_results(args, sets, rows, training, complete=False)

        for method in ("direct", "channel", "flipped"):  # the untrained model first: cheapest, and seed-free
            evaluate("smollm2", "smollm2", method, None)
        extra = {} if args.unlikelihood_weight is None else {"unlikelihood_weight": args.unlikelihood_weight}
        for seed in range(args.seeds):
            for objective in ("direct", "flipped"):
                out = args.models / f"{objective}-meta-seed{seed}"
                trained = flip_train("smollm2", [str(DATA / t) for t in META_TRAIN], out, objective=objective,
                                     steps=args.steps, examples_per_task=args.examples_per_task, seed=seed,
                                     device=args.device, store=store, **extra)
                training.append({"arm": f"{objective}-meta", "seed": seed, "steps": trained.steps,
                                 "final_loss": trained.final_loss, "first_loss": trained.loss_curve[0],
                                 "seconds": trained.seconds, "tokens": trained.tokens,
                                 "checkpoint": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)})
                print(f"meta-trained {objective} seed {seed}: loss {trained.loss_curve[0]:.3f} -> "
                      f"{trained.final_loss:.3f}, {trained.seconds:.0f}s", flush=True)
                evaluate(f"{objective}-meta", str(out), objective, seed)
        # Diagnostic arms, after the table's: content-free calibration (Zhao et al., 2021) removes each option's
        # score on the input "N/A", the prior an option has whatever the input (flipped's copy of an option that the
        # instruction names, direct's favourite label word); scored for the untrained model and both meta arms.
        for method in ("direct", "flipped"):
            evaluate("smollm2", "smollm2", method, None, calibrate="content-free")
        for seed in range(args.seeds):
            for objective in ("direct", "flipped"):
                out = args.models / f"{objective}-meta-seed{seed}"
                evaluate(f"{objective}-meta", str(out), objective, seed, calibrate="content-free")
    print(json.dumps(write_results(args, sets, rows, training, complete=True), indent=2))


def write_results(args: argparse.Namespace, sets: dict[str, dict], rows: list[dict], training: list[dict], *,
                  complete: bool) -> dict:
    """Write what is measured so far to ``args.out`` (``complete`` false until every arm is scored); returns the
    summary. Written after every arm, so an interrupted run leaves its results behind, not only its store."""
    summary = summarize(rows, sets)
    write_atomic(args.out, json.dumps({
        "claim": "Flipped-meta-trained beats DIRECT-meta-trained on unseen tasks, most on unseen labels",
        "complete": complete,
        "meta_training_tasks": META_TRAIN, "unseen_tasks": UNSEEN, "label_sets": sets,
        "settings": {"seeds": args.seeds, "steps": args.steps, "examples_per_task": args.examples_per_task,
                     "eval_examples": args.eval_examples, "normalize": "sum",
                     "calibrate": "none; content-free in the diagnostic arms (method + content-free)"},
        "summary": summary, "training": training,
        "rows": [{k: v for k, v in row.items() if k != "correct"} for row in rows],
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scoring_smollm2.py",
    }, indent=2) + "\n")
    write_atomic(args.out.with_suffix(".md"), markdown(summary, rows, training, args, complete))
    return summary


def markdown(summary: dict, rows: list[dict], training: list[dict], args: argparse.Namespace, complete: bool) -> str:
    """The results as the README quotes them: one line per arm, the paired differences, the training cost."""
    lines = ["# Flipped vs DIRECT meta-training on unseen tasks (SmolLM2-135M-Instruct)", ""]
    if not complete:
        lines += ["**Partial results: the run is not finished.**", ""]
    lines += [f"Mean accuracy over the {len(UNSEEN)} unseen tasks ({', '.join(UNSEEN)}), at most {args.eval_examples} "
              f"test examples each, {args.seeds} seed(s) for meta-trained arms, 95% bootstrap intervals (examples "
              "resampled within tasks). Label sets: unseen = none of the task's verbalizers occurs in meta-training. "
              "Top-option share: how often the most predicted option is predicted (mean over tasks).", "",
              "| arm | all tasks | unseen labels | partly seen | seen labels | top-option share |",
              "|---|---|---|---|---|---|"]
    for arm, entry in summary["arms"].items():
        cells = []
        for category in ("all", "unseen", "partly seen", "seen"):
            value = entry.get(category)
            cells.append(f"{value['accuracy']:.3f} [{value['ci95'][0]:.3f}, {value['ci95'][1]:.3f}]" if value else "")
        shares = entry.get("top_option_share_by_task", {})
        share = f"{statistics.fmean(shares.values()):.2f}" if shares else ""
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {share} |")
    for key, title in (("flipped_minus_direct_meta", "Flipped-meta minus DIRECT-meta (points, paired)"),
                       ("flipped_minus_direct_meta_calibrated", "The same, both with content-free calibration")):
        if key in summary:
            lines += ["", f"{title}: " + "; ".join(
                f"{category} {d['points']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"
                for category, d in summary[key].items())]
    if training:
        lines += ["", "| meta-training | seed | steps | loss first -> last | tokens | seconds |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {t['arm']} | {t['seed']} | {t['steps']} | {t['first_loss']:.2f} -> {t['final_loss']:.2f} | "
                  f"{t['tokens']:,} | {t['seconds']:.0f} |" for t in training]
    lines += ["", "Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scoring_smollm2.py`", ""]
    return "\n".join(lines)

def summarize(rows: list[dict], sets: dict[str, dict]) -> dict:
    """Per (model, method): mean accuracy over unseen tasks with its interval, overall and per label category;
    and the paired flipped-meta minus direct-meta difference."""
    correct: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}
    for row in rows:
        correct.setdefault((row["model"], _method(row)), {}).setdefault(row["task"], []).append(
            np.array(row["correct"], float))
    averaged = {arm: {task: np.mean(runs, axis=0) for task, runs in tasks.items()} for arm, tasks in correct.items()}
    categories = {"all": list(sets), **{c: [t for t, s in sets.items() if s["labels"] == c]
                                         for c in ("unseen", "partly seen", "seen")}}
    summary: dict = {"arms": {}}
    for (model, method), tasks in averaged.items():
        entry = {}
        for category, names in categories.items():
            if names:
                mean, low, high = bootstrap_over_tasks({t: tasks[t] for t in names})
                entry[category] = {"accuracy": mean, "ci95": [low, high], "tasks": names}
        mine = [r for r in rows if r["model"] == model and _method(r) == method]
        entry["macro_f1_by_task"] = {t: statistics.fmean(r["macro_f1"] for r in mine if r["task"] == t) for t in tasks}
        # how often the most predicted option is predicted: near 1, the arm answers one option whatever the input
        entry["top_option_share_by_task"] = {
            t: statistics.fmean(max(r["predicted_per_option"]) / r["n"] for r in mine if r["task"] == t)
            for t in tasks if all("predicted_per_option" in r for r in mine if r["task"] == t)}
        summary["arms"][f"{model} / {method}"] = entry
    for suffix, key in (("", "flipped_minus_direct_meta"), (" + content-free", "flipped_minus_direct_meta_calibrated")):
        flipped = averaged.get(("flipped-meta", "flipped" + suffix))
        direct = averaged.get(("direct-meta", "direct" + suffix))
        if flipped and direct and flipped.keys() == direct.keys():
            summary[key] = {}
            for category, names in categories.items():
                if names and all(t in flipped for t in names):
                    mean, low, high = bootstrap_over_tasks({t: flipped[t] for t in names},
                                                           {t: direct[t] for t in names})
                    summary[key][category] = {"points": 100 * mean, "ci95": [100 * low, 100 * high]}
    return summary


def _method(row: dict) -> str:
    """The arm's method as the summary names it: ``flipped``, or ``flipped + content-free`` when calibrated."""
    return row["method"] + ("" if row.get("calibrate", "none") == "none" else f" + {row['calibrate']}")


if __name__ == "__main__":
    main()
