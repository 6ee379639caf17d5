"""Few-shot finetuning proxy: a few optimizer steps on about 100 target examples, scored on 150 others.

The closest cheap imitation of the real thing (finetuning on the whole target); it costs a few seconds per
candidate instead of minutes.
"""

from __future__ import annotations

import numpy as np

from ...checkpoints import load_for_classification, load_tokenizer, resolve_checkpoint
from ...protocols import Protocol
from ...store import ZooEntry
from ...tasks import Split, Task, sample_indices
from ...training import compute_metrics, configure_threads, predict
from ...training.batching import encode
from ...training.devices import resolve_device
from ...training.loop import Trainer
from ..context import EstimatorUnavailable, SelectionContext
from .base import Estimator, register_estimator

TRAIN_EXAMPLES, EVAL_EXAMPLES, MIN_EXAMPLES = 100, 150, 40
PROTOCOL = Protocol(name="fewshot", epochs=2, batch_size=16, learning_rate=1e-4, warmup_ratio=0.1, max_length=128,
                    train_precision="bf16")


def fewshot_splits(task: Task, seed: int) -> tuple[Split, Split]:
    """Disjoint (train, eval) samples of the target's train split: 100 and 150 of up to 250 examples."""
    split = task.splits["train"]
    if len(split) < MIN_EXAMPLES:
        raise EstimatorUnavailable(f"{len(split)} train examples; the few-shot proxy needs {MIN_EXAMPLES}")
    total = min(len(split), TRAIN_EXAMPLES + EVAL_EXAMPLES)
    chosen = np.random.default_rng(seed).permutation(
        sample_indices(split.labels, total, seed, stratify=task.kind == "classification"))
    cut = max(total * TRAIN_EXAMPLES // (TRAIN_EXAMPLES + EVAL_EXAMPLES), 1)
    return split.take(chosen[:cut].tolist()), split.take(chosen[cut:].tolist())


def fewshot_score(candidate: ZooEntry, task: Task, train: Split, held_out: Split, seed: int, *,
                  allow_pickle: bool = False, device: str | None = None) -> float:
    """The target metric on ``held_out`` after :data:`PROTOCOL` on ``train``, starting from ``candidate``, trained
    on ``device`` (default ``$UPCYCLE_DEVICE`` or ``auto``)."""
    configure_threads()
    device = resolve_device(device)
    checkpoint = resolve_checkpoint(candidate.path, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(checkpoint)
    model = load_for_classification(checkpoint, task.label_names, seed).to(device)
    regression = task.kind == "regression"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded_train = encode(tokenizer, train, PROTOCOL.max_length, regression)
    encoded_eval = encode(tokenizer, held_out, PROTOCOL.max_length, regression)
    trainer = Trainer(model, encoded_train, PROTOCOL, PROTOCOL.learning_rate, seed, pad_id, device)
    for epoch in range(PROTOCOL.epochs):
        trainer.train_epoch(epoch, None)
    predictions = predict(model, encoded_eval, pad_id, precision="fp32", regression=regression, device=device)
    return compute_metrics(task, predictions, encoded_eval.labels)[task.primary_metric]


@register_estimator
class FewShotProxy(Estimator):
    name = "fewshot"
    summary = "2 epochs (14 steps) on ~100 target examples, scored on ~150 held-out target examples"
    fallback = "probe"
    reads_sample = False  # its own train/held-out split of the target, whatever the sample size

    def scores(self, context: SelectionContext) -> dict[str, float]:
        train, held_out = fewshot_splits(context.target, context.seed)

        def score(candidate: ZooEntry) -> float:
            with context.meter.timed(f"fewshot:{candidate.fingerprint}"):
                return fewshot_score(candidate, context.target, train, held_out, context.seed,
                                     allow_pickle=context.cache is not None and context.cache.allow_pickle,
                                     device=context.meter.device)

        return context.per_candidate(self.name, score)
