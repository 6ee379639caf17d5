"""Expert LMs against a multitask LM on unseen tasks: SmolLM2-135M-Instruct on the shared data.

The claim tested (Jang et al., ICML 2023, "Exploring the Benefits of Training Expert Language Models over
Instruction Tuning"): experts finetuned one per task, with the right one retrieved for an unseen task, can match or
beat a multitask model trained on the union of their tasks; and adding a task adds an expert without touching the
others, while a multitask model must be retrained and moves on the old tasks.

Tasks: the meta-training tasks (``META_TRAIN``) and unseen tasks (``UNSEEN``) of ``benchmarks/scoring_smollm2.py``
(whole task clusters held out, no data overlap; asserted there and here). Systems, each scored zero-shot with the
``direct`` method on the same evaluation sample (at most ``--eval-examples`` test examples per unseen task,
stratified, seed 0), shipped templates, default options:
* ``base``: smollm2 untrained;
* ``multitask``: one DIRECT (LM loss on the answer) LoRA model trained on all meta-training tasks with the same
  total steps as all experts together (``--steps`` x 8);
* ``roe-top1``: Retrieval of Experts (32 target instances vote with all-MiniLM-L6-v2 over 100 training instances
  per expert), the top expert answers;
* ``roe-merged-top3``: the uniform average of the top ``--top-k`` experts answers;
* ``oracle``: the expert with the best accuracy on the test labels (an upper bound for any router);
* ``random``: a uniformly random expert (the mean over experts: expected accuracy, expected macro-F1).
Experts and the multitask model run ``--seeds`` seeds (data sample and order, LoRA initialisation).

Continual learning (the first ``--continual-seeds`` seeds, default 1, once every seed's systems are scored):
``--new-task`` (default poem_sentiment, neither meta-training nor unseen) gets an expert; the 8 old experts are
rescored on their own tasks (``force``: computed again, not read from the store) and must not move (their files are
not touched: fingerprints compared); a multitask model retrained on the 9 tasks (9 x ``--steps``) is scored on the 8
old tasks against the 8-task one. RoE over 9 experts is rerun on the unseen tasks, and routes that changed are
listed. The question is yes/no per task (does a score move at all), so one seed answers it; each run's record is
kept beside its models (``continual-TASK.json``).

Intervals: accuracy is averaged over seeds per example; the mean over tasks gets a percentile bootstrap interval
resampling examples within each task (10,000 draws; ``bootstrap_over_tasks`` of scoring_smollm2.py); differences
are bootstrapped paired on the same resampled examples.

Resumable: scores and routes live in ``--db``, experts, multitask and merged models in ``--models`` (a finished
model is reused, an interrupted training resumes), so rerunning the command only does what is missing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/experts_smollm2.py

writes ``benchmarks/results/experts_smollm2.json`` (key ``rows``: one object per system x unseen task x seed, with
``accuracy`` and ``macro_f1``) and ``experts_smollm2.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))  # the scoring benchmark's task split and bootstrap

import numpy as np  # noqa: E402
from scoring_smollm2 import DATA, META_TRAIN, ROOT, UNSEEN, bootstrap_over_tasks  # noqa: E402

from upcycle.checkpoints import resolve_checkpoint  # noqa: E402
from upcycle.report import write_atomic  # noqa: E402
from upcycle.scoring import build_experts, expert_scores, flip_train, route, score  # noqa: E402
from upcycle.scoring.experts import INDEX_SIZE, QUERIES, score_with_experts  # noqa: E402
from upcycle.store import Store  # noqa: E402
from upcycle.tasks import load_task, overlapping, template_for  # noqa: E402

SYSTEMS = ("base", "multitask", "roe-top1", "roe-merged-top{k}", "oracle", "random")
METHOD = "direct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="Optimizer steps per expert.")
    parser.add_argument("--examples-per-task", type=int, default=100)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--new-task", default="poem_sentiment", help="The task added for continual learning.")
    parser.add_argument("--continual-seeds", type=int, default=1,
                        help="Seeds that run continual learning (the first ones), after every seed's systems.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--db", type=Path, default=ROOT / "runs" / "experts_smollm2" / "upcycle.db")
    parser.add_argument("--models", type=Path, default=ROOT / "runs" / "experts_smollm2" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "experts_smollm2.json")
    args = parser.parse_args()
    for name in UNSEEN:  # no evaluation task shares data with a training task, the added one included
        assert not overlapping(name) & set(META_TRAIN + [args.new_task]), name
    assert args.new_task not in META_TRAIN + UNSEEN
    args.db.parent.mkdir(parents=True, exist_ok=True)
    merged_system = f"roe-merged-top{args.top_k}"
    labels = {name: gold_labels(name, args.eval_examples) for name in UNSEEN + META_TRAIN}
    rows, training, routes, continual = [], [], [], []
    options = {"method": METHOD, "max_examples": args.eval_examples, "device": args.device}

    def row(system: str, task: str, seed: int | None, result, correct: np.ndarray, **extra) -> dict:
        record = {"system": system, "task": task, "seed": seed, "accuracy": float(result["accuracy"]),
                  "macro_f1": float(result["macro_f1"]), "n": int(result["n"]),
                  "top_option_share": float(result["top_option_share"]), **extra,
                  "correct": correct.astype(float).tolist()}
        print(f"{system:18s} {task:22s} seed {seed}: accuracy {record['accuracy']:.3f} macro-F1 "
              f"{record['macro_f1']:.3f}" + (f" ({extra['answered_by']})" if "answered_by" in extra else ""),
              flush=True)
        return record

    def scored(result, task: str) -> tuple[dict, np.ndarray]:
        return ({"accuracy": result.accuracy, "macro_f1": result.macro_f1, "n": result.n,
                 "top_option_share": top_option_share(result.predictions)},
                (result.predictions == labels[task]).astype(float))

    with Store(args.db) as store:
        for name in UNSEEN:  # the untrained model: seed-free
            (result,) = score(DATA / name, "smollm2", store=store, **options)
            rows.append(row("base", name, None, *scored(result, name)))
        trained = {}  # seed -> (folder, train options, experts, multitask): continual learning reuses them
        for seed in range(args.seeds):
            folder = args.models / f"seed{seed}"
            train = {"steps": args.steps, "examples_per_task": args.examples_per_task, "seed": seed,
                     "device": args.device, "store": store}
            built = build_experts("smollm2", [DATA / t for t in META_TRAIN], folder, **train)
            experts = [r.zoo_name for r in built]
            training += [training_record(f"expert-{task}", seed, r) for task, r in zip(META_TRAIN, built)]
            multitask = flip_train("smollm2", [DATA / t for t in META_TRAIN], folder / "multitask-8",
                                   objective="direct", **{**train, "steps": args.steps * len(META_TRAIN)})
            training.append(training_record("multitask-8", seed, multitask))
            for name in UNSEEN:
                task = DATA / name
                (result,) = score(task, multitask.checkpoint, store=store, **options)
                rows.append(row("multitask", name, seed, *scored(result, name)))
                each = expert_scores(task, store=store, experts=experts, **options)
                (top1,) = score_with_experts(task, store=store, experts=experts, top_k=1, **options)
                (merged,) = score_with_experts(task, store=store, experts=experts, top_k=args.top_k,
                                               merged_dir=args.models / "merged", **options)
                rows.append(row("roe-top1", name, seed, *scored(top1, name), answered_by="+".join(top1.answered_by)))
                rows.append(row(merged_system, name, seed, *scored(merged, name),
                                answered_by="+".join(merged.answered_by)))
                oracle = max(each, key=lambda e: (each[e].accuracy, each[e].macro_f1))
                rows.append(row("oracle", name, seed, *scored(each[oracle], name), answered_by=oracle))
                correct = np.mean([scored(r, name)[1] for r in each.values()], axis=0)
                mean = {"accuracy": statistics.fmean(r.accuracy for r in each.values()),
                        "macro_f1": statistics.fmean(r.macro_f1 for r in each.values()), "n": top1.n,
                        "top_option_share": statistics.fmean(top_option_share(r.predictions) for r in each.values())}
                rows.append(row("random", name, seed, mean, correct, experts=len(each)))
                routes.append({"task": name, "seed": seed, "votes": top1.route.vote_counts(),
                               "queries": top1.route.queries, "chosen": list(merged.answered_by),
                               "oracle": oracle, "per_expert_accuracy": {e: r.accuracy for e, r in each.items()},
                               "notes": list(top1.route.notes)})
                write_results(args, rows, routes, continual, training, complete=False)
            trained[seed] = (folder, train, built, multitask)
        for seed in range(min(args.continual_seeds, args.seeds)):  # after every seed's systems: they come first
            continual.append(continual_learning(args, store, seed, *trained[seed], labels, options, training))
            write_results(args, rows, routes, continual, training, complete=False)
    print(json.dumps(write_results(args, rows, routes, continual, training, complete=True), indent=2))


def write_results(args, rows: list[dict], routes: list[dict], continual: list[dict], training: list[dict], *,
                  complete: bool) -> dict:
    """Write what is measured so far to ``args.out`` and its Markdown table (``complete`` false until every seed's
    systems and continual-learning run are in), so an interrupted run leaves its numbers behind; returns the
    summary."""
    merged_system = f"roe-merged-top{args.top_k}"
    summary = summarize(rows, routes, continual, merged_system)
    write_atomic(args.out, json.dumps({
        "claim": "Experts retrieved per unseen task (RoE) vs a multitask LM on the union of their tasks; "
                 "adding an expert leaves the others unchanged, retraining the multitask model does not",
        "complete": complete,
        "meta_training_tasks": META_TRAIN, "unseen_tasks": UNSEEN, "new_task": args.new_task,
        "settings": {"seeds": args.seeds, "steps_per_expert": args.steps,
                     "multitask_steps": args.steps * len(META_TRAIN), "examples_per_task": args.examples_per_task,
                     "eval_examples": args.eval_examples, "method": METHOD, "normalize": "sum", "calibrate": "none",
                     "lora": True, "top_k": args.top_k, "continual_seeds": min(args.continual_seeds, args.seeds),
                     "queries": QUERIES, "index_size": INDEX_SIZE, "encoder": "all-MiniLM-L6-v2"},
        "summary": summary, "routes": routes, "continual": continual, "training": training,
        "rows": [{k: v for k, v in r.items() if k != "correct"} for r in rows],
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/experts_smollm2.py",
    }, indent=2) + "\n")
    table = markdown(summary, rows, continual, merged_system, args)
    if not complete:
        table = table.replace("\n\n", "\n\n**Partial results: the run is not finished.**\n\n", 1)
    write_atomic(args.out.with_suffix(".md"), table)
    return summary


def top_option_share(predictions: np.ndarray) -> float:
    """The share of the examples given the most often predicted option: 1.0 when a model answers one option to
    everything (what the untrained model nearly does on several tasks), 1/options at most spread."""
    return float(np.bincount(predictions).max() / len(predictions))


def gold_labels(name: str, eval_examples: int) -> np.ndarray:
    """The gold options of the evaluation sample ``score(..., max_examples=eval_examples)`` reads."""
    task = load_task(DATA / name).subsample(None, eval_examples, 0)
    return np.array([p.label for p in template_for(task).prompts(task.splits["test"])])


def training_record(arm: str, seed: int, result) -> dict:
    checkpoint = Path(result.checkpoint)
    return {"arm": arm, "seed": seed, "steps": result.steps, "first_loss": result.loss_curve[0],
            "final_loss": result.final_loss, "seconds": result.seconds, "tokens": result.tokens,
            "checkpoint": str(checkpoint.relative_to(ROOT)) if checkpoint.is_relative_to(ROOT) else str(checkpoint)}


def continual_learning(args, store: Store, seed: int, folder: Path, train: dict, built: list, multitask,
                       labels: dict, options: dict, training: list) -> dict:
    """Add ``args.new_task``'s expert: the old experts (files and scores on their own tasks) must not move; the
    multitask model retrained on 9 tasks is compared with the 8-task one on the 8 old tasks. The record is kept in
    ``folder/continual-TASK.json``, so a rerun does not recompute the forced rescoring."""
    saved = folder / f"continual-{args.new_task}.json"
    if saved.exists():
        record = json.loads(saved.read_text())
        training += record.pop("training")
        return record
    old = {task: r for task, r in zip(META_TRAIN, built)}
    before = {task: score(DATA / task, r.checkpoint, store=store, **options)[0] for task, r in old.items()}
    (added,) = build_experts("smollm2", [DATA / args.new_task], folder, **train)
    training.append(training_record(f"expert-{args.new_task}", seed, added))
    fingerprints_kept = all(resolve_checkpoint(r.checkpoint).fingerprint == r.fingerprint for r in old.values())
    after = {task: score(DATA / task, r.checkpoint, store=store, force=True, **options)[0] for task, r in old.items()}
    retrained = flip_train("smollm2", [DATA / t for t in META_TRAIN + [args.new_task]], folder / "multitask-9",
                           objective="direct", **{**train, "steps": args.steps * (len(META_TRAIN) + 1)})
    training.append(training_record("multitask-9", seed, retrained))
    tasks = []
    for task in META_TRAIN:
        (eight,) = score(DATA / task, multitask.checkpoint, store=store, **options)
        (nine,) = score(DATA / task, retrained.checkpoint, store=store, **options)
        tasks.append({
            "task": task, "expert_before": before[task].accuracy, "expert_after": after[task].accuracy,
            "expert_scores_identical": bool(np.array_equal(before[task].option_scores, after[task].option_scores)),
            "multitask_8": eight.accuracy, "multitask_9": nine.accuracy,
            "multitask_8_correct": (eight.predictions == labels[task]).astype(float).tolist(),
            "multitask_9_correct": (nine.predictions == labels[task]).astype(float).tolist(),
            "multitask_predictions_changed": float(np.mean(eight.predictions != nine.predictions))})
        print(f"continual seed {seed} {task:22s}: expert {before[task].accuracy:.3f} -> {after[task].accuracy:.3f}, "
              f"multitask {eight.accuracy:.3f} -> {nine.accuracy:.3f}", flush=True)
    experts = [r.zoo_name for r in built] + [added.zoo_name]
    rerouted = []
    for name in UNSEEN:
        eight_route = route(DATA / name, store=store, experts=experts[:-1], device=args.device)
        nine_route = route(DATA / name, store=store, experts=experts, device=args.device)
        rerouted.append({"task": name, "before": eight_route.chosen[0].name, "after": nine_route.chosen[0].name,
                         "new_expert_votes": nine_route.vote_counts()[added.zoo_name]})
    record = {"seed": seed, "new_expert": added.zoo_name, "old_expert_fingerprints_unchanged": fingerprints_kept,
              "tasks": tasks, "routes_with_the_new_expert": rerouted}
    write_atomic(saved, json.dumps({**record, "training": training[-2:]}, indent=2) + "\n")
    return record


def summarize(rows: list[dict], routes: list[dict], continual: list[dict], merged_system: str) -> dict:
    """Per system: mean accuracy over the unseen tasks (seeds averaged per example) with its interval, mean
    macro-F1; paired differences against the multitask model; how often RoE picked the oracle expert; and the
    continual-learning changes."""
    correct: dict[str, dict[str, list[np.ndarray]]] = {}
    for r in rows:
        correct.setdefault(r["system"], {}).setdefault(r["task"], []).append(np.array(r["correct"], float))
    averaged = {system: {task: np.mean(runs, axis=0) for task, runs in tasks.items()}
                for system, tasks in correct.items()}
    summary: dict = {"systems": {}}
    for system, tasks in averaged.items():
        mean, low, high = bootstrap_over_tasks(tasks)
        f1 = statistics.fmean(r["macro_f1"] for r in rows if r["system"] == system)
        share = statistics.fmean(r["top_option_share"] for r in rows if r["system"] == system)
        summary["systems"][system] = {"accuracy": mean, "ci95": [low, high], "macro_f1": f1,
                                      "top_option_share": share,
                                      "accuracy_by_task": {t: float(v.mean()) for t, v in tasks.items()}}
    if "multitask" in averaged:
        summary["minus_multitask"] = {}
        for system in ("roe-top1", merged_system, "oracle", "base"):
            if system in averaged:  # on the tasks both have (a partial run has fewer for some systems)
                both = {t: v for t, v in averaged[system].items() if t in averaged["multitask"]}
                mean, low, high = bootstrap_over_tasks(both, averaged["multitask"])
                summary["minus_multitask"][system] = {"points": 100 * mean, "ci95": [100 * low, 100 * high]}
    if routes:
        summary["roe_picked_the_oracle"] = statistics.fmean(  # the oracle or an expert tied with it
            r["per_expert_accuracy"][r["chosen"][0]] == max(r["per_expert_accuracy"].values()) for r in routes)
        summary["roe_top1_regret_points"] = 100 * statistics.fmean(
            r["per_expert_accuracy"][r["oracle"]] - r["per_expert_accuracy"][r["chosen"][0]] for r in routes)
    if continual:
        expert_moves = [abs(t["expert_after"] - t["expert_before"]) for c in continual for t in c["tasks"]]
        eight = {t["task"]: [] for t in continual[0]["tasks"]}
        nine = {t["task"]: [] for t in continual[0]["tasks"]}
        for c in continual:
            for t in c["tasks"]:
                eight[t["task"]].append(np.array(t["multitask_8_correct"]))
                nine[t["task"]].append(np.array(t["multitask_9_correct"]))
        nine_mean = {t: np.mean(v, axis=0) for t, v in nine.items()}
        eight_mean = {t: np.mean(v, axis=0) for t, v in eight.items()}
        mean, low, high = bootstrap_over_tasks(nine_mean, eight_mean)
        summary["continual"] = {
            "old_experts_max_accuracy_change": max(expert_moves),
            "old_experts_scores_identical": all(t["expert_scores_identical"] for c in continual for t in c["tasks"]),
            "old_expert_fingerprints_unchanged": all(c["old_expert_fingerprints_unchanged"] for c in continual),
            "multitask_9_minus_8_on_old_tasks": {"points": 100 * mean, "ci95": [100 * low, 100 * high]},
            "multitask_mean_abs_change_points": 100 * statistics.fmean(
                abs(t["multitask_9"] - t["multitask_8"]) for c in continual for t in c["tasks"]),
            "multitask_predictions_changed": statistics.fmean(
                t["multitask_predictions_changed"] for c in continual for t in c["tasks"]),
        }
    return summary


def markdown(summary: dict, rows: list[dict], continual: list[dict], merged_system: str, args) -> str:
    systems = [s.format(k=args.top_k) for s in SYSTEMS if s.format(k=args.top_k) in summary["systems"]]
    lines = [
        "# Expert LMs vs a multitask LM on unseen tasks (SmolLM2-135M-Instruct)",
        "",
        f"Zero-shot `{METHOD}` scoring, {args.eval_examples} test examples per unseen task at most, {args.seeds} "
        f"seed(s); experts: LoRA, {args.steps} steps each on {len(META_TRAIN)} tasks; multitask: "
        f"{args.steps * len(META_TRAIN)} steps on their union. Mean over unseen tasks with a 95% bootstrap interval "
        "(examples resampled within tasks, seeds averaged per example). *Top option*: the share of a task's "
        "examples given its most often predicted option (mean over tasks and seeds; 1.0 = one answer to everything).",
        "",
        "| system | accuracy | 95% CI | macro-F1 | top option | " + " | ".join(UNSEEN) + " |",
        "|---|---|---|---|---|" + "---|" * len(UNSEEN),
    ]
    for system in systems:
        entry = summary["systems"][system]
        by_task = " | ".join(f"{entry['accuracy_by_task'].get(t, float('nan')):.3f}" for t in UNSEEN)
        lines.append(f"| {system} | {entry['accuracy']:.3f} | [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}] | "
                     f"{entry['macro_f1']:.3f} | {entry['top_option_share']:.2f} | {by_task} |")
    if "minus_multitask" in summary:
        lines += ["", "Paired difference with the multitask LM (accuracy points, 95% CI):", ""]
        for system, diff in summary["minus_multitask"].items():
            lines.append(f"* {system}: {diff['points']:+.1f} [{diff['ci95'][0]:+.1f}, {diff['ci95'][1]:+.1f}]")
    if "roe_picked_the_oracle" in summary:
        lines += ["", f"RoE top-1 picked the oracle expert (or one tied with it) in "
                      f"{summary['roe_picked_the_oracle']:.0%} of task x seed cases; mean regret against the oracle: "
                      f"{summary['roe_top1_regret_points']:.1f} points."]
    if continual:
        c = summary["continual"]
        diff = c["multitask_9_minus_8_on_old_tasks"]
        lines += [
            "", f"## Continual learning: adding `{args.new_task}`", "",
            f"* Old experts: files unchanged: {c['old_expert_fingerprints_unchanged']}; rescored on their own tasks, "
            f"identical option scores: {c['old_experts_scores_identical']}; largest accuracy change "
            f"{c['old_experts_max_accuracy_change']:.3f}.",
            f"* Multitask retrained on 9 tasks vs the 8-task model, on the 8 old tasks: {diff['points']:+.1f} points "
            f"[{diff['ci95'][0]:+.1f}, {diff['ci95'][1]:+.1f}]; mean absolute change per task "
            f"{c['multitask_mean_abs_change_points']:.1f} points; predictions changed on "
            f"{c['multitask_predictions_changed']:.0%} of examples.",
            "", "| seed | task | expert before | expert after | multitask 8 | multitask 9 |",
            "|---|---|---|---|---|---|",
        ]
        for entry in continual:
            for t in entry["tasks"]:
                lines.append(f"| {entry['seed']} | {t['task']} | {t['expert_before']:.3f} | {t['expert_after']:.3f} | "
                             f"{t['multitask_8']:.3f} | {t['multitask_9']:.3f} |")
    lines += ["", "Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/experts_smollm2.py`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
