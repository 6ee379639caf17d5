"""GPU throughput: upcycle's engine against transformers.Trainer on one GPU, and the recycling grid through the
pool at 1, 4 and 8 jobs per GPU (issue 16, item 7).

Part 1, one finetune (anchor: ``transformers.Trainer``, dynamic padding, the way its documentation finetunes a
classifier). Per seed, every arm finetunes all-MiniLM-L6-v2 on the same sst2 sample under the quick protocol (the
stratified 1000 train / 1000 test examples, 2 epochs, batch 32, lr 5e-5, 6% warmup, linear decay, weight decay
0.01, max length 128) on the GPU, and is evaluated on the same test examples; arms alternate within a seed. The
headline pair is the default protocol on both sides: fp32 weights with TF32 matrix products (upcycle enables TF32
on CUDA; Trainer gets ``tf32=True``). A second pair trains with bf16 autocast on both sides (upcycle's
``train_precision=bf16``, the grid's setting; Trainer's ``bf16=True``), and Trainer with
``train_sampling_strategy="group_by_length"`` shows how much length grouping alone explains. One untimed warm-up
finetune per arm comes first, so no arm pays CUDA's start; an arm that fails is recorded and left out. Reported:
train and eval examples/s and test accuracy per arm, and speedups as the mean and std of per-seed ratios.

Part 2, the grid (anchor: the pool with one job per GPU). The 12 experts of the committed MiniLM recycling grid
are built first on the GPU (quick protocol, bf16, max_train 3000, as benchmarks/recycling_minilm.sh; through the
pool, timed), then the grid of those 12 + vanilla MiniLM = 13 candidates x 10 targets x 2 seeds (cells where a
candidate saw the target's data are left out, as ``upcycle bench`` does: 254 finetunes) runs through
``make_executor("pool", jobs=N)`` once per jobs-per-GPU setting, each into a fresh store, so nothing is cached.
Finetunes per minute count from the pool's start (its workers' start included) to its last result. The one-job
setting runs the same 10 targets with fewer candidates (``--single-job-candidates``): the cost of a finetune is
set by its target, not by which checkpoint of the same architecture it starts from, so its rate compares with the
full grid's, and it keeps the run inside the device's 10-minute limit.

Time: ``--time-budget`` (seconds from the start) is shared out; an arm that would overrun is cut at its deadline
(the rate of the finetunes it finished is kept and marked ``truncated``) or skipped (marked ``skipped``), and the
JSON is rewritten after every arm, so a run killed at the limit still leaves what it measured.

Run on a lent GPU machine (``benchmarks/gpu_throughput.sh`` stages the model, data and missing packages, which do
not travel by themselves, and runs this):

    HF_HUB_OFFLINE=1 python benchmarks/gpu_throughput.py --out "$OUT/gpu_throughput.json"

CPU smoke test of the whole script (tiny: 64 examples, 1 seed, 2 experts, 2 targets, 1 and 2 jobs):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_throughput.py --allow-cpu --smoke --out /tmp/gpu_smoke.json

writes ``benchmarks/results/gpu_throughput.json`` by default: ``gpu``, ``train_speedup_vs_trainer``,
``eval_speedup_vs_trainer``, ``accuracy_trainer``, ``accuracy_upcycle``, ``finetunes_per_minute`` (per jobs-per-GPU
setting), ``pool_speedup`` (best setting over one job per GPU), then ``targets``, ``status``, ``ratios``,
``per_arm``, ``raw``, ``experts``, ``grid`` and ``setup``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

STARTED = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from upcycle.checkpoints import load_for_classification, load_tokenizer, resolve_checkpoint  # noqa: E402
from upcycle.execute import make_executor  # noqa: E402
from upcycle.protocols import PRESETS, Protocol  # noqa: E402
from upcycle.ranking import plan_bench, run_bench  # noqa: E402
from upcycle.report import write_atomic  # noqa: E402
from upcycle.specs import FinetuneResult, FinetuneSpec  # noqa: E402
from upcycle.store import Store  # noqa: E402
from upcycle.tasks import Suite, load_suite, load_task  # noqa: E402
from upcycle.training import configure_threads, run_finetune  # noqa: E402
from upcycle.training.devices import available_cores, pool_devices, resolve_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_throughput.json"
SUITE = ROOT / "benchmarks" / "suites" / "recycling_minilm.yaml"
# the 12 source experts of benchmarks/recycling_minilm.sh, in its order
SOURCES = ["ag_news", "cola", "dair_emotion", "esnli", "financial_phrasebank", "imdb", "isear", "mrpc", "sst2",
           "stsb", "trec_coarse", "tweet_eval_offensive"]
EXPERT_OVERRIDES = {"train_precision": "bf16", "max_train": 3000}  # recycling_minilm.sh: FAST + max_train=3000
GRID_OVERRIDES = {"train_precision": "bf16"}  # recycling_minilm.sh: FAST
SPEED_TASK = "sst2"
ARMS = ("trainer", "upcycle", "trainer_bf16", "upcycle_bf16", "trainer_grouped")
PAIRS = {  # ratio name -> (upcycle arm, Trainer arm)
    "train_speedup_vs_trainer": ("upcycle", "trainer", "train_examples_per_s"),
    "eval_speedup_vs_trainer": ("upcycle", "trainer", "eval_examples_per_s"),
    "train_speedup_vs_trainer_bf16": ("upcycle_bf16", "trainer_bf16", "train_examples_per_s"),
    "eval_speedup_vs_trainer_bf16": ("upcycle_bf16", "trainer_bf16", "eval_examples_per_s"),
    "train_speedup_vs_trainer_grouped": ("upcycle", "trainer_grouped", "train_examples_per_s"),
    "eval_speedup_vs_trainer_grouped": ("upcycle", "trainer_grouped", "eval_examples_per_s"),
}
SMOKE = {"max_train": 64, "max_eval": 64, "epochs": 1}
SMOKE_SOURCES = ["financial_phrasebank", "trec_coarse"]  # small; trec_coarse overlaps the target trec_fine
SMOKE_TARGETS = ["cb", "trec_fine"]


def default_data() -> Path:
    """``$UPCYCLE_DATA_DIR``, else ``shared/datasets`` inside the checkout (where a staged or travelling copy lands
    on the device machine), else ``../shared/datasets`` beside it (a developer's machine)."""
    if os.environ.get("UPCYCLE_DATA_DIR"):
        return Path(os.environ["UPCYCLE_DATA_DIR"])
    inside = ROOT / "shared" / "datasets"
    return inside if inside.is_dir() else ROOT.parent / "shared" / "datasets"


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)


# --- part 1: one finetune, Trainer against upcycle --------------------------------------------------------------

def trainer_arm(checkpoint, task, protocol: Protocol, seed: int, *, cuda: bool, bf16: bool, grouped: bool) -> dict:
    """Finetune and evaluate with transformers.Trainer on the device; returns throughput and accuracy.

    The examples are plain dicts (no ``datasets`` needed); DataCollatorWithPadding pads each batch, as with a
    tokenized ``datasets.Dataset``, and group_by_length reads the lengths from ``input_ids``.
    """
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, set_seed

    tokenizer = load_tokenizer(checkpoint)

    def examples(split) -> list[dict]:
        pairs = list(split.text_pairs) if split.text_pairs is not None else None
        encoded = tokenizer(list(split.texts), pairs, truncation=True, max_length=protocol.max_length)
        keys = list(encoded.keys())
        return [{**{key: encoded[key][i] for key in keys}, "labels": int(split.labels[i])} for i in range(len(split))]

    train, test = examples(task.splits["train"]), examples(task.splits["test"])
    set_seed(seed)
    model = load_for_classification(checkpoint, task.label_names, seed)
    precision = {"bf16": bf16}
    if cuda:
        precision["tf32"] = True  # what upcycle does on CUDA (prepare_device); TrainingArguments refuses it on CPU
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir, num_train_epochs=protocol.epochs, per_device_train_batch_size=protocol.batch_size,
            per_device_eval_batch_size=protocol.batch_size, learning_rate=protocol.learning_rate,
            warmup_steps=protocol.warmup_ratio, weight_decay=protocol.weight_decay, lr_scheduler_type="linear",
            max_grad_norm=protocol.max_grad_norm, seed=seed, data_seed=seed, report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=not cuda,
            dataloader_num_workers=0, train_sampling_strategy="group_by_length" if grouped else "random",
            **precision,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=train,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints the final metrics dict; we log our own
        synchronize(cuda)
        started = time.perf_counter()
        trainer.train()
        synchronize(cuda)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        output = trainer.predict(test)
        synchronize(cuda)
        eval_seconds = time.perf_counter() - started
    # label_ids, not our label order: with group_by_length Trainer may reorder evaluation examples too
    accuracy = float(np.mean(output.predictions.argmax(-1) == output.label_ids))
    return {
        "train_examples_per_s": len(train) * protocol.epochs / train_seconds,
        "eval_examples_per_s": len(test) / eval_seconds, "accuracy": accuracy,
        "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "precision": "bf16 autocast" if bf16 else ("fp32, TF32 matmuls" if cuda else "fp32"),
        "train_sampling_strategy": arguments.train_sampling_strategy,
    }


def upcycle_arm(checkpoint, full_task, protocol: Protocol, seed: int, device: str) -> dict:
    """Finetune and evaluate with upcycle's engine on ``device`` (the spec names the full task; the engine draws
    the protocol's subsample, the same examples the Trainer arm gets)."""
    spec = FinetuneSpec.create(checkpoint, full_task, seed=seed, protocol=protocol)
    started = time.perf_counter()
    result = run_finetune(spec, task=full_task, device=device)
    return {
        "train_examples_per_s": result.train_examples_per_s, "eval_examples_per_s": result.eval_examples_per_s,
        "accuracy": result.score, "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
        "wall_seconds": time.perf_counter() - started, "precision": protocol.train_precision,
        "eval_precision": result.eval_precision, "device": result.device,
    }


def synchronize(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def speed_part(args, checkpoint, protocol: Protocol, device: str, deadline: float, report: dict, save) -> None:
    cuda = device.startswith("cuda")
    full_task = load_task(args.data / SPEED_TASK)
    task = full_task.subsample(protocol.max_train, protocol.max_eval, seed=protocol.data_seed)
    arms = [arm for arm in args.arms.split(",") if arm]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or not arms:
        raise ValueError(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    report["setup"]["speed"] = {
        "task": SPEED_TASK, "n_train": len(task.splits["train"]), "n_test": len(task.splits["test"]),
        "seeds_planned": args.seeds, "arms": arms, "protocol": protocol.model_dump(),
        "bf16_arms": "upcycle: train_precision=bf16 (autocast forward, fp32 weights); Trainer: bf16=True",
        "warmup": "one untimed finetune per arm (64 examples, 1 epoch) before seed 0",
    }

    def run(arm: str, seed: int, chosen: Protocol, chosen_task) -> dict:
        if arm.startswith("upcycle"):
            if arm == "upcycle_bf16":
                chosen = chosen.with_overrides({"train_precision": "bf16"})
            return upcycle_arm(checkpoint, full_task, chosen, seed, device)
        return trainer_arm(checkpoint, chosen_task, chosen, seed, cuda=cuda, bf16=arm == "trainer_bf16",
                           grouped=arm == "trainer_grouped")

    failed = report["setup"]["speed"]["failed_arms"] = {}

    def attempt(arm: str, seed: int, chosen: Protocol, chosen_task) -> dict | None:
        """``run``, or None after recording the failure (the arm is then left out of later seeds)."""
        try:
            return run(arm, seed, chosen, chosen_task)
        except Exception as error:
            traceback.print_exc()
            failed[arm] = f"seed {seed}: {type(error).__name__}: {error}"
            report["failures"] += 1
            log(f"speed: arm {arm} failed and is left out: {failed[arm]}")
            return None

    started = time.perf_counter()
    warm = protocol.with_overrides({"max_train": 64, "max_eval": 64, "epochs": 1})
    warm_task = full_task.subsample(64, 64, seed=protocol.data_seed)
    for arm in arms:  # untimed: CUDA's context, cuBLAS handles and kernel loads land here, not in seed 0
        attempt(arm, 0, warm, warm_task)
    log(f"speed: warm-up {time.perf_counter() - started:.1f}s")
    runs: dict[str, list[dict]] = {arm: [] for arm in arms if arm not in failed}
    seed_seconds: list[float] = []
    for seed in range(args.seeds):
        if seed_seconds and time.perf_counter() + max(seed_seconds) > deadline:
            log(f"speed: stopping after {seed} seed(s); another would pass the part's deadline")
            break
        started = time.perf_counter()
        for arm in [arm for arm in runs if arm not in failed]:
            figures = attempt(arm, seed, protocol, task)
            if figures is None:
                continue
            runs[arm].append(figures)
            log(f"speed seed {seed} {arm:16s} train {figures['train_examples_per_s']:8.1f} ex/s  "
                f"eval {figures['eval_examples_per_s']:8.1f} ex/s  accuracy {figures['accuracy']:.4f}")
        seed_seconds.append(time.perf_counter() - started)
        summarize_speed(report, runs)
        done = len(seed_seconds)
        report["setup"]["speed"].update(seeds=list(range(done)), seconds_per_seed=seed_seconds)
        report["status"]["speed"] = "done" if done == args.seeds else f"partial: {done} of {args.seeds} seeds"
        if failed:
            report["status"]["speed"] += f", arms failed: {', '.join(failed)}"
        save()
    if len(seed_seconds) < args.seeds:
        report["status"]["speed"] += " (time budget)"
        save()


def summarize_speed(report: dict, runs: dict[str, list[dict]]) -> None:
    """The headline keys, per-seed ratios (mean, std, values) for every pair, and per-arm figures."""

    def ratios(arm: str, anchor: str, field: str) -> dict | None:
        if arm not in runs or anchor not in runs:
            return None
        return mean_std([a[field] / b[field] for a, b in zip(runs[arm], runs[anchor])])

    report["ratios"] = {name: ratios(*pair) for name, pair in PAIRS.items()}
    report["train_speedup_vs_trainer"] = (report["ratios"]["train_speedup_vs_trainer"] or {}).get("mean")
    report["eval_speedup_vs_trainer"] = (report["ratios"]["eval_speedup_vs_trainer"] or {}).get("mean")
    accuracy = {arm: mean_std([r["accuracy"] for r in rows]) for arm, rows in runs.items()}
    report["accuracy_trainer"] = accuracy.get("trainer", {}).get("mean")
    report["accuracy_upcycle"] = accuracy.get("upcycle", {}).get("mean")
    if "trainer" in runs and "upcycle" in runs:
        report["accuracy_difference_upcycle_minus_trainer"] = mean_std(
            [a["accuracy"] - b["accuracy"] for a, b in zip(runs["upcycle"], runs["trainer"])])
    report["per_arm"] = {arm: {field: mean_std([r[field] for r in rows])
                               for field in ("train_examples_per_s", "eval_examples_per_s", "accuracy")}
                         for arm, rows in runs.items()}
    report["raw"] = runs


# --- part 2: experts, then the grid through the pool --------------------------------------------------------------

class ExpertJob(BaseModel):
    """One expert to build in a pool worker: the finetune and the folder its weights are saved to."""

    source: str
    spec: FinetuneSpec
    folder: str


def build_expert_json(job_json: str) -> str:
    """What a pool worker runs for one expert (module level, so a spawned worker finds it)."""
    job = ExpertJob.model_validate_json(job_json)
    return run_finetune(job.spec, save_to=job.folder).model_dump_json()


def build_experts(args, checkpoint, protocol: Protocol, sources: list[str], folder: Path, deadline: float,
                  report: dict, save) -> dict[str, str]:
    """Build the experts (through the pool with ``--expert-jobs`` jobs per GPU, or one after another in this
    process with 0); return their folders by source. Stops at ``deadline`` and keeps those finished."""
    jobs, unloadable = [], {}
    for source in sources:  # a source that does not load is left out and recorded, not the end of the grid
        try:
            task = load_task(args.data / source)
        except Exception as error:
            unloadable[source] = f"{type(error).__name__}: {error}"
            log(f"expert {source}: left out, its data does not load: {unloadable[source]}")
            continue
        jobs.append(ExpertJob(source=source, folder=str(folder / f"{checkpoint.name}-{source}"),
                              spec=FinetuneSpec.create(checkpoint, task, seed=0, protocol=protocol)))
    built: dict[str, str] = {}
    rows = []
    started = time.perf_counter()
    if args.expert_jobs > 0:
        executor = make_executor("pool", jobs=args.expert_jobs * len(pool_devices()))
        stream = executor.map(build_expert_json, jobs, lambda job: f"expert {job.source}")
    else:
        stream = ((job, run_finetune(job.spec, save_to=job.folder).model_dump_json()) for job in jobs)
    truncated, failure = False, None
    try:
        for job, payload in stream:
            result = FinetuneResult.model_validate_json(payload)
            built[job.source] = job.folder
            rows.append({"source": job.source, "score": result.score, "metric": result.metric,
                         "train_seconds": result.train_seconds, "train_examples_per_s": result.train_examples_per_s,
                         "device": result.device, "arrived_s": time.perf_counter() - started})
            log(f"expert {job.source}: {result.metric} {result.score:.4f} "
                f"({result.train_examples_per_s:.0f} train ex/s on {result.device})")
            if time.perf_counter() > deadline and len(built) < len(jobs):
                truncated = True
                break
    except Exception as error:  # the grid still runs, with the experts built so far
        traceback.print_exc()
        failure = f"{type(error).__name__}: {error}"
        report["failures"] += 1
        log(f"experts: stopped by a failure, keeping {len(built)}: {failure}")
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - started
    report["experts"] = {
        "sources": sources, "built": list(built), "unloadable": unloadable, "failure": failure, "seconds": seconds,
        "experts_per_minute": 60 * len(built) / seconds if seconds else None,
        "how": (f"pool, {args.expert_jobs} job(s) per GPU" if args.expert_jobs > 0 else "one after another in the "
                "driver process"), "protocol": protocol.model_dump(), "truncated": truncated, "per_expert": rows,
    }
    if len(built) == len(sources):
        report["status"]["experts"] = "done"
    else:
        why = "time budget" if truncated else "failure" if failure else "data that does not load"
        report["status"]["experts"] = f"{len(built)} of {len(sources)} built ({why})"
    log(f"experts: {len(built)} built in {seconds:.1f}s")
    save()
    return built


def grid_arm(jobs_per_gpu: int, base, candidates: list[str], suite: Suite, seeds: int, protocol: Protocol,
             folder: Path, deadline: float) -> dict:
    """Run one grid through a fresh pool into a fresh store; stop taking results at ``deadline``."""
    gpus = len(pool_devices())
    with Store(folder / f"grid-{jobs_per_gpu}.db") as store:
        grid = plan_bench(store, base=base, suite=suite, seeds=seeds, protocol=protocol, candidates=candidates,
                          name=f"gpu-throughput-{jobs_per_gpu}")
        specs = grid.specs()
        executor = make_executor("pool", jobs=jobs_per_gpu * gpus)
        arrivals, results = [], []
        started = time.perf_counter()
        stream = run_bench(grid, store, executor)
        truncated = False
        try:
            for result, _, _ in stream:
                arrivals.append(time.perf_counter() - started)
                results.append(result)
                if time.perf_counter() > deadline and len(results) < len(specs):
                    truncated = True
                    break
        finally:
            stream.close()  # a cut arm: nothing more starts; the pool waits for the finetunes in flight
        wall = time.perf_counter() - started
    done = len(results)
    last = arrivals[-1] if arrivals else wall
    steady = (done - 1) / (arrivals[-1] - arrivals[0]) * 60 if done > 1 and arrivals[-1] > arrivals[0] else None
    return {
        "jobs_per_gpu": jobs_per_gpu, "workers": jobs_per_gpu * gpus, "gpus": gpus,
        "candidates": 1 + len(candidates), "seeds": seeds,
        "targets": [Path(target).name for target in suite.targets],
        "planned_finetunes": len(specs), "finetunes": done, "truncated": truncated,
        "seconds_to_last_result": last, "wall_seconds_with_shutdown": wall,
        "seconds_to_first_result": arrivals[0] if arrivals else None,
        "finetunes_per_minute": 60 * done / last if done else None,
        "finetunes_per_minute_after_first_result": steady,
        "mean_train_examples_per_s_per_job": mean_std([r.train_examples_per_s for r in results]),
        "mean_train_seconds_per_job": mean_std([r.train_seconds for r in results]),
        "devices": sorted({r.device for r in results if r.device}),
        "scores": {r.key: r.score for r in results},
    }


def grid_part(args, checkpoint, folder: Path, deadline: float, report: dict, save) -> None:
    smoke = SMOKE if args.smoke else {}
    expert_protocol = PRESETS["quick"].with_overrides({**EXPERT_OVERRIDES, **smoke})
    grid_protocol = PRESETS["quick"].with_overrides({**GRID_OVERRIDES, **smoke})
    settings = [int(value) for value in args.jobs_per_gpu.split(",") if value]
    suite = load_suite(str(SUITE))
    targets, sources = grid_targets(args), grid_sources(args)
    unloadable = {}
    for target in targets:  # plan_bench loads every target: one that does not load is left out here, and recorded
        try:
            load_task(args.data / target)
        except Exception as error:
            unloadable[target] = f"{type(error).__name__}: {error}"
            log(f"target {target}: left out, its data does not load: {unloadable[target]}")
    targets = [target for target in targets if target not in unloadable]
    gpus = len(pool_devices())
    report["setup"]["grid"] = {
        "base": "minilm", "sources": sources, "targets": targets, "unloadable_targets": unloadable,
        "grid_seeds": args.grid_seeds, "jobs_per_gpu_settings": settings,
        "single_job_candidates": args.single_job_candidates, "single_job_seeds": args.single_job_seeds,
        "expert_protocol": expert_protocol.model_dump(), "grid_protocol": grid_protocol.model_dump(), "gpus": gpus,
        "threads_per_worker": {str(j): max(1, available_cores() // (j * gpus)) for j in settings},
        "finetunes_per_minute": "finetunes finished / seconds from the pool's start (workers' start included) to "
                                "its last result",
    }
    # by path, so every worker reads the data folder chosen here
    suite = Suite(suite.name, tuple(str(args.data / target) for target in targets), suite.overlap_groups)
    # the experts may take a third of what is left; the grid settings share the rest
    expert_deadline = time.perf_counter() + (deadline - time.perf_counter()) / 3
    built = build_experts(args, checkpoint, expert_protocol, sources, folder / "experts", expert_deadline,
                          report, save)
    by_source = {source: built[source] for source in sources if source in built}  # SOURCES order, not arrival
    experts = list(by_source.values())
    # the one-job subset: experts whose source overlaps no target first, so every target keeps all its cells
    overlapping = {source for source in sources for target in targets if suite.overlaps(source, target)}
    subset_order = ([path for source, path in by_source.items() if source not in overlapping]
                    + [path for source, path in by_source.items() if source in overlapping])
    report["grid"] = {"order": settings, "settings": {}}
    for position, jobs_per_gpu in enumerate(settings):
        later = len(settings) - position - 1
        now = time.perf_counter()
        arm_deadline = deadline - args.arm_reserve * later  # every later setting keeps --arm-reserve seconds
        key = str(jobs_per_gpu)
        if arm_deadline - now < 20:
            report["grid"]["settings"][key] = {"skipped": "time budget"}
            report["status"][f"grid_{key}"] = "skipped: time budget"
            log(f"grid {key} job(s) per GPU: skipped (time budget)")
            save()
            continue
        single = jobs_per_gpu == 1 and args.single_job_candidates > 0
        candidates = subset_order[:args.single_job_candidates - 1] if single else experts
        seeds = args.single_job_seeds if single else args.grid_seeds
        log(f"grid {key} job(s) per GPU: {1 + len(candidates)} candidates x {len(targets)} targets x {seeds} "
            f"seed(s), deadline in {arm_deadline - now:.0f}s")
        try:
            figures = grid_arm(jobs_per_gpu, checkpoint, candidates, suite, seeds, grid_protocol, folder,
                               arm_deadline)
        except Exception as error:  # one setting failing leaves the others to run
            log(f"grid {key} job(s) per GPU failed: {type(error).__name__}: {error}")
            report["grid"]["settings"][key] = {"failed": f"{type(error).__name__}: {error}"}
            report["status"][f"grid_{key}"] = f"failed: {type(error).__name__}: {error}"
            report["failures"] += 1
            save()
            continue
        figures["subset_of_the_grid"] = single
        report["grid"]["settings"][key] = figures
        report["finetunes_per_minute"][key] = figures["finetunes_per_minute"]
        report["status"][f"grid_{key}"] = (
            f"truncated: {figures['finetunes']} of {figures['planned_finetunes']} (time budget)"
            if figures["truncated"] else "done")
        log(f"grid {key} job(s) per GPU: {figures['finetunes']} finetunes in "
            f"{figures['seconds_to_last_result']:.1f}s = {figures['finetunes_per_minute'] or 0:.1f} per minute "
            f"({figures['finetunes_per_minute_after_first_result'] or 0:.1f} after the first result)")
        summarize_grid(report)
        save()


def grid_targets(args) -> list[str]:
    return args.targets.split(",") if args.targets else list(load_suite(str(SUITE)).targets)


def grid_sources(args) -> list[str]:
    return args.sources.split(",") if args.sources else list(SOURCES)


def summarize_grid(report: dict) -> None:
    """pool_speedup (the best setting's finetunes per minute over one job per GPU's), its steady-state twin, and
    the largest score difference between settings on the cells they share."""
    settings = {key: value for key, value in report["grid"]["settings"].items() if value.get("finetunes")}
    rates = {key: value["finetunes_per_minute"] for key, value in settings.items()}
    steady = {key: value["finetunes_per_minute_after_first_result"] for key, value in settings.items()}
    if "1" in rates and len(rates) > 1:
        best = max((key for key in rates if key != "1"), key=lambda key: rates[key])
        report["pool_speedup"] = rates[best] / rates["1"]
        report["pool_speedup_setting"] = int(best)
        if steady.get("1") and steady.get(best):
            report["pool_speedup_after_first_result"] = steady[best] / steady["1"]
    differences = []
    keys = sorted(settings)
    for i, first in enumerate(keys):
        for second in keys[i + 1:]:
            a, b = settings[first]["scores"], settings[second]["scores"]
            differences += [abs(a[key] - b[key]) for key in set(a) & set(b)]
    report["grid"]["max_abs_score_difference_between_settings"] = max(differences) if differences else None


# --- driver -------------------------------------------------------------------------------------------------------

def needed_datasets(args) -> list[str]:
    """The dataset folders a run with ``args`` reads (all of them for the default run: what to stage)."""
    parts = set(args.parts.split(","))
    return sorted(({SPEED_TASK} if "speed" in parts else set())
                  | (set(grid_sources(args)) | set(grid_targets(args)) if "grid" in parts else set()))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON, rewritten after every arm")
    parser.add_argument("--data", type=Path, default=None, help="the datasets folder (default: see default_data)")
    parser.add_argument("--parts", default="speed,grid", help="speed, grid, or both (default)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the Trainer-vs-upcycle comparison")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"arms of the comparison, from {', '.join(ARMS)}")
    parser.add_argument("--sources", default=None, help="comma-separated expert sources (default: the 12)")
    parser.add_argument("--targets", default=None, help="comma-separated grid targets (default: the suite's 10)")
    parser.add_argument("--grid-seeds", type=int, default=2)
    parser.add_argument("--jobs-per-gpu", default="8,1,4",
                        help="settings, run in this order (the key pair first, so a cut run still has it)")
    parser.add_argument("--single-job-candidates", type=int, default=5,
                        help="candidates (vanilla MiniLM included) the one-job setting runs on every target; "
                             "0: the whole grid")
    parser.add_argument("--single-job-seeds", type=int, default=1)
    parser.add_argument("--expert-jobs", type=int, default=8,
                        help="pool jobs per GPU building the experts; 0: one after another in this process")
    parser.add_argument("--time-budget", type=float, default=510.0, help="seconds from the start for everything")
    parser.add_argument("--speed-share", type=float, default=0.3, help="share of the budget part 1 may use")
    parser.add_argument("--arm-reserve", type=float, default=90.0,
                        help="seconds every grid setting still to come keeps when an earlier one is cut")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (the CPU smoke test)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings: 64 examples, 1 epoch, 1 seed, 2 experts, 2 targets, 2 and 1 jobs "
                             "(the one-job setting on 2 candidates)")
    parser.add_argument("--print-datasets", action="store_true",
                        help="print the datasets a full run reads, one per line, and exit (for staging)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.grid_seeds, args.single_job_seeds = 1, 1, 1
        args.sources = args.sources or ",".join(SMOKE_SOURCES)
        args.targets = args.targets or ",".join(SMOKE_TARGETS)
        args.jobs_per_gpu = "2,1" if args.jobs_per_gpu == "8,1,4" else args.jobs_per_gpu
        args.expert_jobs = min(args.expert_jobs, 2)
        args.single_job_candidates = 2  # vanilla MiniLM and financial_phrasebank: the subset path, 4 finetunes
    args.data = (args.data or default_data()).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.print_datasets:
        print("\n".join(needed_datasets(args)))
        return 0
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"gpu_throughput: no CUDA GPU is visible (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
              "this benchmark measures a GPU. Pass --allow-cpu for the CPU smoke test.", file=sys.stderr)
        return 2
    parts = [part for part in args.parts.split(",") if part]
    if not parts or set(parts) - {"speed", "grid"}:
        print(f"gpu_throughput: --parts takes speed, grid or both, not {args.parts!r}.", file=sys.stderr)
        return 2
    missing = [name for name in needed_datasets(args) if not (args.data / name / "dataset.json").exists()]
    if missing:
        print(f"gpu_throughput: {args.data} lacks {', '.join(missing)}; pass --data (the folder of the shared "
              "datasets).", file=sys.stderr)
        return 2
    os.environ["UPCYCLE_DATA_DIR"] = str(args.data)  # workers inherit it
    deadline = STARTED + args.time_budget
    threads = configure_threads()
    device = resolve_device()
    checkpoint = resolve_checkpoint("minilm")
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    staged = args.data / "STAGE.json"
    report: dict = {
        "gpu": gpu, "train_speedup_vs_trainer": None, "eval_speedup_vs_trainer": None, "accuracy_trainer": None,
        "accuracy_upcycle": None, "finetunes_per_minute": {}, "pool_speedup": None,
        "targets": {}, "status": {part: "not run" for part in parts}, "failures": 0,
        "setup": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "smoke": args.smoke, "device": device,
            "gpu": gpu, "gpu_count": torch.cuda.device_count() if gpu else 0,
            "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory if gpu else None,
            "cpu_count": os.cpu_count(), "available_cores": available_cores(), "driver_threads": threads,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "transformers": transformers_version(), "model": "all-MiniLM-L6-v2 (alias minilm)",
            "model_path": str(checkpoint.path), "data": str(args.data), "time_budget_s": args.time_budget,
            "staged_inputs": json.loads(staged.read_text()) if staged.exists() else None,
        },
    }

    def save() -> None:
        report["setup"]["elapsed_s"] = time.perf_counter() - STARTED
        report["targets"] = assess_targets(report)
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")

    def attempt(part: str, run) -> None:
        try:
            run()
            if report["status"][part] == "not run":
                report["status"][part] = "done"
        except Exception as error:  # one part failing leaves the other to run; the log keeps the traceback
            traceback.print_exc()
            report["status"][part] = f"failed: {type(error).__name__}: {error}"
            report["failures"] += 1
            save()

    save()
    log(f"device {device} ({gpu or 'no GPU'}), {available_cores()} cores, torch {torch.__version__}, "
        f"transformers {transformers_version()}, data {args.data}, writing {args.out}")
    if "speed" in parts:
        protocol = PRESETS["quick"].with_overrides(SMOKE if args.smoke else {})
        until = STARTED + args.speed_share * args.time_budget if "grid" in parts else deadline
        attempt("speed", lambda: speed_part(args, checkpoint, protocol, device, until, report, save))
        if gpu:
            torch.cuda.empty_cache()  # the driver idles during the grid: give its cached memory back
    if "grid" in parts:
        with tempfile.TemporaryDirectory(prefix="gpu_throughput-") as folder:
            attempt("grid", lambda: grid_part(args, checkpoint, Path(folder), deadline, report, save))
    save()
    log("done in {:.0f}s: ".format(time.perf_counter() - STARTED) + json.dumps({key: report[key] for key in (
        "gpu", "train_speedup_vs_trainer", "eval_speedup_vs_trainer", "accuracy_trainer", "accuracy_upcycle",
        "finetunes_per_minute", "pool_speedup", "targets", "status")}))
    return 1 if report["failures"] else 0


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def assess_targets(report: dict) -> dict:
    """The issue's targets, read off the numbers: upcycle >= 1.5x Trainer's training throughput at equal accuracy
    (here: the mean per-seed accuracy difference within 1 point), and the pool >= 4x one job per GPU."""
    speedup, pool = report.get("train_speedup_vs_trainer"), report.get("pool_speedup")
    difference = report.get("accuracy_difference_upcycle_minus_trainer")
    return {
        "train_speedup_at_least_1_5": None if speedup is None else speedup >= 1.5,
        "accuracy_within_1_point": None if difference is None else abs(difference["mean"]) <= 0.01,
        "pool_speedup_at_least_4": None if pool is None else pool >= 4,
    }


if __name__ == "__main__":
    sys.exit(main())
