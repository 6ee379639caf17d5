"""The finetune loop: a :class:`~upcycle.specs.FinetuneSpec` goes in, a :class:`~upcycle.specs.FinetuneResult`
comes out.

The engine is a plain PyTorch loop: tokenise once, length-grouped batches padded per batch, AdamW with linear
warmup and decay, gradient clipping, then evaluation on the test split sorted by length (bf16 autocast where
the CPU supports it natively). Model selection (early stopping) only ever looks at the validation split.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..checkpoints import load_for_classification, load_tokenizer, save_checkpoint
from ..errors import ConfigError, TaskError, UpcycleError
from ..protocols import Protocol
from ..specs import ENGINE_VERSION, FinetuneResult, FinetuneSpec, ProgressCallback, SavedFinetune
from ..tasks import Task
from .batching import Encoded, collate, encode, inference_batches, micro_batches, to_device, train_batches
from .devices import (
    available_cores,
    bf16_autocast,
    describe_device,
    device_type,
    is_out_of_memory,
    prepare_device,
    resolve_device,
)
from .metrics import caveats, classification_metrics, regression_metrics

MICRO_BATCH_TOKENS = 8192  # padded tokens per forward pass; larger batches accumulate gradients over chunks
MICRO_BATCH_VARIABLE = "UPCYCLE_MICRO_BATCH_TOKENS"  # an execution setting (it never changes the gradient)


def micro_batch_tokens() -> int:
    """Padded tokens per forward pass: ``$UPCYCLE_MICRO_BATCH_TOKENS`` or :data:`MICRO_BATCH_TOKENS`."""
    value = os.environ.get(MICRO_BATCH_VARIABLE, "")
    if not value:
        return MICRO_BATCH_TOKENS
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{MICRO_BATCH_VARIABLE}={value}: use a positive number of tokens, e.g. 4096.")
    return int(value)


@contextmanager
def out_of_memory_explained(device: str, protocol: Protocol, what: str) -> Iterator[None]:
    """Turn an allocator running out during ``what`` into one UpcycleError that says what to lower."""
    try:
        yield
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        raise UpcycleError(
            f"Out of memory on {device} while {what} (batch size {protocol.batch_size}, at most {micro_batch_tokens()} "
            f"padded tokens per forward pass). Lower the batch (--set batch_size={max(1, protocol.batch_size // 2)}) "
            f"or the tokens per pass ({MICRO_BATCH_VARIABLE}={micro_batch_tokens() // 2}; same gradient), or run "
            "fewer jobs per GPU (--jobs). Results already stored are kept.") from None


def configure_threads() -> int:
    """One intra-op thread per core this process may run on (torch's default counts all cores).

    ``OMP_NUM_THREADS``, when set (Ray sets it to a task's CPU share), wins, so parallel workers do not
    oversubscribe the machine.
    """
    import torch  # lazy: torch stays off the CLI's --help path

    cores = available_cores()
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        cores = min(cores, int(requested))
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return cores


def resolve_eval_precision(requested: str, kind: str = "classification", device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` for classification on CPUs with native bf16 (AVX512-BF16 / AMX), else ``fp32``.

    Regression stays in fp32 under ``auto``: bf16 keeps 8 bits of mantissa, which rounds nearby predicted
    values together and can turn a correct ranking into ties (a Spearman of 1.0 became 0.0 in a test).
    An argmax over class logits is robust to that rounding (identical predictions in the speed benchmark).
    """
    if requested != "auto":
        return requested
    if kind != "classification":
        return "fp32"
    import torch  # lazy: torch stays off the CLI's --help path

    if device_type(device) == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device_type(device) != "cpu":
        return "fp32"
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return "bf16" if probe is not None and probe() else "fp32"


def run_finetune(
    spec: FinetuneSpec,
    *,
    save_to: str | Path | None = None,
    progress: ProgressCallback | None = None,
    task: Task | None = None,
    device: str | None = None,
) -> FinetuneResult:
    """Train ``spec.base`` on ``spec.task`` under ``spec.protocol`` and evaluate on the test split.

    With ``save_to`` the finetuned model, its tokenizer and an ``upcycle.json`` provenance file are written
    there atomically. ``task`` may pass the already loaded task (it must have the spec's fingerprint) to save
    loading it again. ``device`` (default ``$UPCYCLE_DEVICE`` or ``auto``, see :mod:`.devices`) is where it runs;
    the result records it.
    """
    configure_threads()
    device = resolve_device(device)
    prepare_device(device)
    micro_batch_tokens()  # a bad setting fails before any work
    protocol = spec.protocol
    checkpoint = spec.base.resolve()
    if task is None:
        task = spec.task.load()
    elif task.fingerprint != spec.task.fingerprint:
        raise TaskError(f"The task passed for {spec.task.name} is not the one the spec names (fingerprint differs).")
    task = task.subsample(protocol.max_train, protocol.max_eval, seed=protocol.data_seed)
    tokenizer = load_tokenizer(checkpoint)
    with out_of_memory_explained(device, protocol, f"loading {spec.base.name}"):
        model = load_for_classification(checkpoint, task.label_names, spec.seed).to(device)
    regression = task.kind == "regression"
    data = {name: encode(tokenizer, split, protocol.max_length, regression) for name, split in task.splits.items()}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    precision = resolve_eval_precision(protocol.eval_precision, task.kind, device)

    def evaluate(split: str) -> tuple[dict[str, float], float, np.ndarray]:
        started = time.perf_counter()
        predictions = predict(model, data[split], pad_id, precision=precision, regression=regression,
                              progress=progress, phase=f"eval {split}", device=device)
        seconds = time.perf_counter() - started
        return compute_metrics(task, predictions, data[split].labels), seconds, predictions

    learning_rate = protocol.learning_rate_for(checkpoint.arch.model_type)
    with out_of_memory_explained(device, protocol, f"finetuning {spec.base.name} on {task.name}"):
        trainer = Trainer(model, data["train"], protocol, learning_rate, spec.seed, pad_id, device)
        train_seconds, epochs_run, best_validation = _fit(trainer, lambda: evaluate("validation")[0],
                                                          task.primary_metric, progress)
        test_metrics, eval_seconds, test_predictions = evaluate("test")
    result = FinetuneResult(
        key=spec.key(), task_name=task.name, base_name=spec.base.name, seed=spec.seed, protocol=protocol.name,
        metric=task.primary_metric, score=test_metrics[task.primary_metric], metrics=test_metrics,
        validation=best_validation, n_train=len(data["train"]), n_test=len(data["test"]), epochs_run=epochs_run,
        train_seconds=train_seconds, eval_seconds=eval_seconds,
        train_examples_per_s=len(data["train"]) * epochs_run / max(train_seconds, 1e-9),
        eval_examples_per_s=len(data["test"]) / max(eval_seconds, 1e-9), eval_precision=precision,
        versions=_versions(), created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=caveats(test_predictions, kind=task.kind, label_names=task.label_names, split_notes=task.notes),
        device=describe_device(device),
    )
    if save_to is not None:
        provenance = {
            "upcycle_version": __version__, "spec_key": result.key, "base_fingerprint": spec.base.fingerprint,
            "base_name": spec.base.name, "task": task.name, "task_fingerprint": spec.task.fingerprint,
            "seed": spec.seed, "protocol": protocol.model_dump(), "metrics": test_metrics,
        }
        saved = save_checkpoint(model, tokenizer, Path(save_to), provenance, overwrite=True)
        result = result.model_copy(update={"checkpoint_path": str(saved.path)})
    return result


def _fit(
    trainer: Trainer, validate: Callable[[], dict[str, float]], metric: str, progress: ProgressCallback | None
) -> tuple[float, int, dict[str, float] | None]:
    """Train for the protocol's epochs; with early stopping, keep the weights of the best validation epoch.

    Returns (training seconds, epochs run, validation metrics of the kept weights or None).
    """
    patience = trainer.protocol.early_stopping_patience
    best_score, best_state, best_validation, stale = -np.inf, None, None, 0
    seconds, epochs_run = 0.0, 0
    for epoch in range(trainer.protocol.epochs):
        started = time.perf_counter()
        trainer.train_epoch(epoch, progress)
        seconds += time.perf_counter() - started
        epochs_run = epoch + 1
        if patience is None:
            continue
        validation = validate()
        if validation[metric] > best_score:
            best_score, best_validation, stale = validation[metric], validation, 0
            best_state = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        trainer.model.load_state_dict(best_state)
    return seconds, epochs_run, best_validation


def adamw_with_schedule(parameters: list, protocol: Protocol, learning_rate: float, total_steps: int):
    """AdamW without weight decay on biases and LayerNorm weights (``ndim < 2``), and a linear schedule that
    warms up over ``protocol.warmup_ratio`` of ``total_steps`` and decays to 0. Returns (optimizer, scheduler)."""
    import torch  # lazy: torch stays off the CLI's --help path
    from transformers import get_linear_schedule_with_warmup  # lazy: transformers is slow to import

    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": protocol.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=True)
    warmup = int(np.ceil(total_steps * protocol.warmup_ratio))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def train_step(model, data: Encoded, indices: np.ndarray, pad_id: int, protocol: Protocol, parameters: list,
               optimizer, scheduler, device: str = "cpu"):
    """One optimizer step on the examples ``indices`` of ``data``: micro-batches of at most
    :func:`micro_batch_tokens` padded tokens accumulate the batch's mean-loss gradient, then clip, step, schedule.

    Returns the batch's mean loss as a 0-d tensor on ``device``, not read (reading it would wait for the device);
    a :class:`DivergenceCheck` reads many at once.
    """
    import torch  # lazy: torch stays off the CLI's --help path

    autocast = bf16_autocast(device, protocol.train_precision == "bf16")
    total = torch.zeros((), device=device)
    for chunk in micro_batches(indices, data.lengths, micro_batch_tokens()):
        batch = to_device(collate(data, chunk, pad_id), device)
        with autocast:
            # the loss is a mean over examples: weighting each chunk by its share gives the batch mean
            loss = model(**batch).loss * (len(chunk) / len(indices))
        loss.backward()
        total += loss.detach().float()
    if protocol.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, protocol.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


class DivergenceCheck:
    """Catches a non-finite loss without a host-device sync every step: the losses of the steps since the last
    check are summed on the device (one NaN or inf makes the sum non-finite) and read every ``every`` steps and
    when the caller asks, always before anything is evaluated or saved, so a diverged model is never stored."""

    def __init__(self, every: int = 16):
        self.every, self.pending, self.first, self.steps = every, None, 0, 0

    def add(self, loss, where: str) -> None:
        """Record one step's loss (a 0-d tensor); every ``every`` steps, :meth:`check`."""
        self.pending = loss if self.pending is None else self.pending + loss
        self.steps += 1
        if self.steps - self.first >= self.every:
            self.check(where)

    def check(self, where: str) -> None:
        """UpcycleError if any loss since the last check was not finite (``where`` names the epoch)."""
        if self.pending is None:
            return
        total, self.pending = float(self.pending), None
        steps = f"step {self.steps}" if self.steps == self.first + 1 else f"steps {self.first + 1}-{self.steps}"
        self.first = self.steps
        if not np.isfinite(total):
            raise UpcycleError(f"Training diverged: the loss became {total} in {where} ({steps}); nothing was "
                               "saved. Lower the learning rate (--set learning_rate=...) or keep fp32 training.")


class Trainer:
    """AdamW (no decay on biases and LayerNorm weights) with linear warmup and decay, per-batch padding."""

    def __init__(self, model, train: Encoded, protocol: Protocol, learning_rate: float, seed: int, pad_id: int,
                 device: str = "cpu"):
        self.model, self.train, self.protocol, self.pad_id, self.device = model, train, protocol, pad_id, device
        self.rng = np.random.default_rng(seed)
        self.parameters = list(model.parameters())
        self.divergence = DivergenceCheck()
        steps_per_epoch = -(-len(train) // protocol.batch_size)
        self.optimizer, self.scheduler = adamw_with_schedule(self.parameters, protocol, learning_rate,
                                                             steps_per_epoch * protocol.epochs)

    def train_epoch(self, epoch: int, progress: ProgressCallback | None) -> None:
        """One epoch; raises UpcycleError when the loss stopped being finite (checked before it returns)."""
        self.model.train()
        batches = train_batches(self.train.lengths, self.protocol.batch_size, self.rng, self.protocol.length_grouping)
        done, where = 0, f"epoch {epoch + 1}"
        for indices in batches:
            loss = train_step(self.model, self.train, indices, self.pad_id, self.protocol, self.parameters,
                              self.optimizer, self.scheduler, self.device)
            self.divergence.add(loss, where)
            done += len(indices)
            if progress is not None:
                progress(f"train epoch {epoch + 1}/{self.protocol.epochs}", done, len(self.train))
        self.divergence.check(where)


def predict(
    model, encoded: Encoded, pad_id: int, *, precision: str = "fp32", regression: bool = False,
    batch_size: int = 128, progress: ProgressCallback | None = None, phase: str = "eval", device: str = "cpu",
) -> np.ndarray:
    """Predictions for every example, in the original order: (n,) class indices or (n,) regression values."""
    import torch  # lazy: torch stays off the CLI's --help path

    model.eval()
    outputs = np.empty(len(encoded), dtype=np.float32 if regression else np.int64)
    done = 0
    with torch.inference_mode(), bf16_autocast(device, precision == "bf16"):
        for indices, inputs in inference_batches(encoded, pad_id, batch_size, device):
            logits = model(**inputs).logits.float().cpu()
            outputs[indices] = logits[:, 0].numpy() if regression else logits.argmax(-1).numpy()
            done += len(indices)
            if progress is not None:
                progress(phase, done, len(encoded))
    return outputs


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if task.kind == "regression":
        return regression_metrics(predictions, labels)
    return classification_metrics(predictions, labels, task.num_labels)


def _versions() -> dict[str, str]:
    import torch  # lazy: torch stays off the CLI's --help path
    import transformers  # lazy: transformers is slow to import

    return {"upcycle": __version__, "engine": str(ENGINE_VERSION), "torch": torch.__version__,
            "transformers": transformers.__version__}


def finetune_json(spec_json: str) -> str:
    """What an executor runs for one finetune job: the spec's JSON in, the result's JSON out."""
    return run_finetune(FinetuneSpec.model_validate_json(spec_json)).model_dump_json()


def saved_finetune_json(job_json: str) -> str:
    """What an executor runs for a finetune whose model is kept (``zoo build --executor pool``): a
    :class:`~upcycle.specs.SavedFinetune`'s JSON in, the result's JSON out."""
    job = SavedFinetune.model_validate_json(job_json)
    return run_finetune(job.spec, save_to=job.save_to).model_dump_json()
