"""Flipped Learning meta-training (Ye et al., ICLR 2023): teach a causal LM to guess the instruction.

The ``flipped`` scoring method picks the option ``y`` under which the instruction ``I`` is most likely after the
input: P(I | x, y). A model meta-trained on that direction reads the label as evidence, so it scores labels it
never generated in training as well as those it did (the paper's gain on unseen labels). The objective, per
training example with its gold option ``y+`` and up to ``max_wrong`` wrong options ``y-``::

    L = -mean_t log P(I_t | x, y+, I_<t)  +  lambda * mean_{y-} mean_t -log(1 - P(I_t | x, y-, I_<t))

The first term alone would teach the model to produce the instruction whatever the label (the instruction is
the same for every example of a task); the unlikelihood term (Welleck et al., 2020) makes it depend on whether
the label fits the input. The ``direct`` objective is the usual meta-training baseline on the same examples
and steps: -log P(y+ | I, x).

Text and tokens are the scorer's own: a FLIPPED row is :func:`upcycle.scoring.methods.flipped_request`, a
DIRECT row the ``direct`` method's request of the gold option, both tokenized by the scoring primitive's encoder
(BOS only where the tokenizer adds one, the context cut from the left to ``max_length``). What the model is
trained on is exactly what ``upcycle score --method flipped`` later reads.

``lambda`` (``unlikelihood_weight``) defaults to 1.0: both terms are means per token of a negative log
probability, so weight 1 gives the "do generate" and "do not generate" signals the same scale. The paper's
own value could not be confirmed from the sources at hand (the paper's method section and the official
repository, seonghyeonye/Flipped-Learning, were not readable there), so 1.0 is this module's choice, not the
paper's; try 0.5 to 3 when the likelihood term stalls or the model stops telling labels apart.

Wrong options are sampled (at most ``max_wrong``, default 4) per example and step, so a 50-class task costs
5 rows per example, not 50, and every wrong option is still seen over the run. All sampling and the data order
are pure functions of ``(seed, step)``; with the torch RNG saved in the resume state, a resumed run continues
exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..checkpoints import (
    PROVENANCE_FILE,
    Checkpoint,
    atomic_directory,
    load_tokenizer,
    resolve_checkpoint,
    save_checkpoint,
)
from ..checkpoints import load_language_model as load_model
from ..errors import CheckpointError, ConfigError, TaskError
from ..specs import ProgressCallback
from ..store import Store
from ..tasks import Task, load_task
from ..tasks.prompts import Prompt, template_for
from ..training import configure_threads
from ..training.devices import bf16_autocast, describe_device, prepare_device, resolve_device
from ..zoo import register
from .loglikelihood import LanguageModel, _encode, _model_max_length, _pad_id
from .methods import METHODS, flipped_request

OBJECTIVES = ("flipped", "direct")
DEFAULT_UNLIKELIHOOD_WEIGHT = 1.0
# LoRA: rank 8 and alpha 16 (scale 2) are PEFT's and the LoRA paper's usual small setting; "all-linear" puts
# adapters on every linear layer of the blocks (Llama: q/k/v/o and gate/up/down projections) and, in PEFT, never
# on the output layer, so tied embeddings stay untouched and the merged model is an ordinary checkpoint.
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"}
# AdamW learning rates: LoRA's B matrices start at zero and few parameters train, so adapters need the larger
# rate common for LoRA (1e-4); a full finetune moves every pretrained weight, and 1e-5 keeps a small instruct
# model close to what it already knows.
LORA_LEARNING_RATE = 1e-4
FULL_LEARNING_RATE = 1e-5
WARMUP_RATIO = 0.06
MAX_GRAD_NORM = 1.0
MIN_ONE_MINUS_P = 1e-6  # unlikelihood's floor on 1 - p: at p -> 1 the token costs -log(1e-6) = 13.8, not inf
# Rows of a step run in forward passes of at most this many padded tokens, sorted by length so that rows of like
# length share a pass: one pass over a whole step pads every row to the step's longest (a third of the tokens on
# the shared tasks) and holds every activation at once. The loss and its gradient are the same sums either way
# (LoRA's dropout masks are drawn per pass, so with dropout on, two budgets agree in distribution, not bitwise).
# 512 measured 1.17x (flipped) and 1.07x (direct) the tokens/s of one pass on SmolLM2 and halved flipped's peak
# memory (benchmarks/results/flip_train_speed.json); 2048 held a whole step of these tasks in one pass, changing
# nothing.
MICRO_BATCH_TOKENS = 512
LOSS_WINDOW = 10  # final_loss: the mean of the last steps' losses (one batch alone is noisy)
STATE_SUFFIX = ".partial-state"


# ---------------------------------------------------------------------------------------------------------------
# Pure functions: tensors in, tensors out.


def token_logprobs(logits, targets, mask):
    """log P(target) at each position.

    Args:
        logits: ``(..., V)`` scores over the vocabulary (any float dtype; computed in fp32).
        targets: ``(...)`` token ids; where ``mask`` is 0 any value is accepted (padding).
        mask: ``(...)`` 1/True at real tokens.

    Returns:
        ``(...)`` fp32 log-probabilities, 0 where ``mask`` is 0.
    """
    import torch  # lazy: torch stays off the CLI's --help path

    mask = mask.bool()
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, picked, torch.zeros_like(picked))


def likelihood_loss(logprobs, mask):
    """Mean over real tokens of -log p: ``logprobs`` and ``mask`` of one shape ``(...)`` -> a scalar (0 when the
    mask selects nothing)."""
    import torch  # lazy: torch stays off the CLI's --help path

    mask = mask.bool()
    picked = torch.where(mask, logprobs, torch.zeros_like(logprobs))
    return -picked.sum() / mask.sum().clamp(min=1)


def unlikelihood_loss(logprobs, mask):
    """Mean over real tokens of -log(1 - p): ``logprobs`` and ``mask`` of one shape ``(...)`` -> a scalar.

    Computed in log space as ``log(1 - exp(logp))`` with the accurate branch for each range (``log(-expm1)``
    near p = 1, ``log1p(-exp)`` below p = 1/2; Maechler 2012), after capping p at ``1 - MIN_ONE_MINUS_P``: at
    p -> 1 a token costs a large finite 13.8, never inf, and no NaN reaches the gradient (padding and capped
    tokens give a zero gradient).
    """
    import torch  # lazy: torch stays off the CLI's --help path

    mask = mask.bool()
    capped = torch.where(mask, logprobs, torch.full_like(logprobs, -1.0)).clamp(max=math.log1p(-MIN_ONE_MINUS_P))
    log_one_minus_p = torch.where(capped > -math.log(2.0), torch.log(-torch.expm1(capped)),
                                  torch.log1p(-torch.exp(capped)))
    per_token = torch.where(mask, -log_one_minus_p, torch.zeros_like(log_one_minus_p))
    return per_token.sum() / mask.sum().clamp(min=1)


def length_groups(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of ``lengths`` cut into forward passes of at most ``budget`` padded tokens (rows x the longest).

    Rows are taken shortest first, so each pass pads little; a row longer than ``budget`` runs alone. ``None``:
    one pass holding every row, in the given order.
    """
    if budget is None:
        return [list(range(len(lengths)))] if len(lengths) else []
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        if groups and (len(groups[-1]) + 1) * lengths[index] <= budget:  # sorted: this row is the longest so far
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


# ---------------------------------------------------------------------------------------------------------------
# Training data: prompts, their requests, and which examples each step sees.


def training_prompts(tasks: Sequence[Task], examples_per_task: int, seed: int) -> list[Prompt]:
    """Each task's train prompts (its template from :func:`template_for`), at most ``examples_per_task`` per task
    (a stratified sample drawn with ``seed``), in task order; :func:`step_examples` shuffles them."""
    prompts: list[Prompt] = []
    for task in tasks:
        template = template_for(task)  # also refuses regression tasks, in one line
        if "train" not in task.splits or not len(task.splits["train"]):
            raise TaskError(f"Task '{task.name}' has no train split; flip-train learns from train examples.")
        train = task.subsample(examples_per_task, None, seed).splits["train"]
        prompts.extend(template.prompts(train))
    return prompts


def example_requests(prompt: Prompt, objective: str, wrong: Sequence[int] = ()) -> list[tuple[str, str, bool]]:
    """One example's rows ``(context, continuation, is_gold)``: for ``flipped`` the gold option's FLIPPED request
    then one per ``wrong`` option; for ``direct`` the DIRECT request of the gold option."""
    assert prompt.label is not None
    if objective == "direct":
        context, continuation = METHODS.get("direct").requests(prompt)[prompt.label]
        return [(context, continuation, True)]
    gold = flipped_request(prompt.input, prompt.options[prompt.label], prompt.instruction)
    rows = [(*gold, True)]
    rows += [(*flipped_request(prompt.input, prompt.options[j], prompt.instruction), False) for j in wrong]
    return rows


def step_examples(count: int, step: int, batch_size: int, seed: int) -> list[int]:
    """The example indices optimizer step ``step`` (0-based) trains on: a stream of seeded permutations of the
    ``count`` examples (one per pass over the data), cut into ``batch_size`` slices. A pure function of its
    arguments, so a resumed run needs no saved data position."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        cycle, offset = divmod(position, count)
        indices.append(int(_permutation(count, seed, cycle)[offset]))
    return indices


def _permutation(count: int, seed: int, cycle: int) -> np.ndarray:
    return np.random.default_rng([seed, cycle]).permutation(count)


def wrong_options(prompt: Prompt, max_wrong: int, seed: int, step: int, index: int) -> list[int]:
    """At most ``max_wrong`` wrong options of example ``index`` at ``step``, drawn without replacement from a
    generator seeded by all three, in option order."""
    others = [j for j in range(len(prompt.options)) if j != prompt.label]
    if len(others) <= max_wrong:
        return others
    rng = np.random.default_rng([seed, step, index])
    return sorted(int(j) for j in rng.choice(others, size=max_wrong, replace=False))


# ---------------------------------------------------------------------------------------------------------------
# The public API.


@dataclass(frozen=True)
class FlipTrainResult:
    """A finished flip-train run.

    ``loss_curve`` holds each optimizer step's loss (``steps`` values); ``final_loss`` is the mean of the last
    ``LOSS_WINDOW`` of them. ``seconds`` and ``tokens`` count the optimizer steps (over every session of a resumed
    run), not loading or saving; ``tokens`` are the real (unpadded) tokens through the model. ``resumed_from`` is
    the step a saved state resumed from (None: a fresh start);
    ``reused`` is True when ``out`` already held this run's result and nothing was trained.
    """

    checkpoint: str
    fingerprint: str
    base_fingerprint: str
    objective: str
    steps: int
    final_loss: float
    loss_curve: tuple[float, ...]
    seconds: float
    tokens: int
    resumed_from: int | None = None
    reused: bool = False
    zoo_name: str | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def flip_train(
    model: str = "smollm2",
    tasks: Sequence[str | Path | Task] = (),
    out: str | Path | None = None,
    *,
    objective: str = "flipped",
    unlikelihood_weight: float = DEFAULT_UNLIKELIHOOD_WEIGHT,
    steps: int = 100,
    batch_size: int = 8,
    learning_rate: float | None = None,
    lora: bool = True,
    examples_per_task: int = 500,
    max_wrong: int = 4,
    seed: int = 0,
    device: str | None = "auto",
    precision: str = "fp32",
    max_length: int = 512,
    save_every: int = 50,
    store: Store | None = None,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    micro_batch_tokens: int | None = MICRO_BATCH_TOKENS,
) -> FlipTrainResult:
    """Meta-train the causal LM ``model`` on ``tasks`` with Flipped Learning (or the ``direct`` baseline) and save
    it to ``out`` as an ordinary model folder.

    Args:
        model: ``smollm2``, a local causal LM folder or a hub id. Seq2seq models are refused for now.
        tasks: task references (shared names, folders, tables) or loaded tasks, or one comma-separated string;
            classification only.
        out: the output folder. If it exists it must hold this very run's result (then it is returned at once).
        objective: ``flipped`` (P(I | x, y) with unlikelihood on wrong options) or ``direct`` (P(y | I, x)).
        unlikelihood_weight: lambda, the weight of the unlikelihood term (``flipped`` only).
        steps: optimizer steps, cycling over the examples; ``batch_size`` examples per step.
        learning_rate: AdamW's peak rate (default 1e-4 with LoRA, 1e-5 for a full finetune); warmup over 6% of
            the steps, then linear decay to 0; gradients clipped at norm 1.
        lora: train LoRA adapters (merged into the weights at the end) instead of every weight.
        examples_per_task: a stratified sample of at most this many train examples per task.
        max_wrong: wrong options per example and step (``flipped``).
        precision: ``fp32`` or ``bf16`` (autocast; weights, optimizer and losses stay fp32).
        max_length: the longest context + continuation in tokens (the context is cut from the left).
        save_every: write a resume state beside ``out`` every this many steps; rerunning the same call resumes.
        store: register the result in this store's zoo, with the base and the tasks as its lineage.
        name: its zoo name (default: the folder's name).
        progress: a ``(phase, done, total)`` callback, called after every step.
        micro_batch_tokens: a step's rows, sorted by length, run in forward passes of at most this many padded
            tokens, their gradients summed (``None``: one pass per step). Speed and memory only: the loss and its
            gradient are the same sums (dropout masks aside), so it is not part of what a resume must match.
    """
    if micro_batch_tokens is not None and micro_batch_tokens < 1:
        raise ConfigError(f"micro_batch_tokens must be at least 1 (or None), not {micro_batch_tokens}.")
    _check_options(objective, unlikelihood_weight, steps, batch_size, learning_rate, examples_per_task, max_wrong,
                   precision, max_length, save_every)
    if out is None:
        raise ConfigError("flip_train needs out: the folder the trained model is saved to.")
    if isinstance(tasks, str):  # "a,b": as on the command line, not the characters of one name
        tasks = [name.strip() for name in tasks.split(",") if name.strip()]
    elif isinstance(tasks, (Path, Task)):
        tasks = [tasks]
    if not tasks:
        raise ConfigError("flip_train needs at least one task to meta-train on.")
    out = Path(out).expanduser()
    checkpoint = resolve_checkpoint(model)
    if checkpoint.config.get("is_encoder_decoder", False):
        raise ConfigError(f"{checkpoint.name} is a seq2seq (encoder-decoder) model; flip-train supports causal LMs "
                          "for now (for example smollm2 or a Llama-style folder).")
    loaded = [task if isinstance(task, Task) else load_task(task) for task in tasks]
    prompts = training_prompts(loaded, examples_per_task, seed)
    rate = learning_rate if learning_rate is not None else (LORA_LEARNING_RATE if lora else FULL_LEARNING_RATE)
    arguments = _arguments(checkpoint, loaded, objective, unlikelihood_weight, steps, batch_size, rate, lora,
                           examples_per_task, max_wrong, seed, precision, max_length)
    if out.exists():
        return _finished(out, arguments, checkpoint, _source_task(loaded), store, name)
    state_dir = out.with_name(out.name + STATE_SUFFIX)
    saved = _read_state(state_dir, arguments)

    run = _Run(checkpoint, arguments, prompts, device, progress, micro_batch_tokens)
    if saved is not None:
        run.restore(state_dir, saved)
    run.train(state_dir, save_every)
    model_out = run.merged_model()
    provenance = {
        "upcycle_version": __version__, "kind": "flip-train", "base_name": checkpoint.name,
        "base_fingerprint": checkpoint.fingerprint, "task": _source_task(loaded), "flip_train": arguments,
        "final_loss": _final_loss(run.curve), "loss_curve": run.curve, "seconds": run.seconds, "tokens": run.tokens,
        "device": describe_device(run.device), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    saved_checkpoint = save_checkpoint(model_out, run.tokenizer, out, provenance)
    shutil.rmtree(state_dir, ignore_errors=True)
    result = FlipTrainResult(
        checkpoint=str(saved_checkpoint.path), fingerprint=saved_checkpoint.fingerprint,
        base_fingerprint=checkpoint.fingerprint, objective=objective, steps=steps,
        final_loss=_final_loss(run.curve), loss_curve=tuple(run.curve), seconds=run.seconds, tokens=run.tokens,
        resumed_from=None if saved is None else saved["step"])
    return _registered(result, saved_checkpoint, checkpoint, _source_task(loaded), store, name)


def _check_options(objective: str, unlikelihood_weight: float, steps: int, batch_size: int,
                   learning_rate: float | None, examples_per_task: int, max_wrong: int, precision: str,
                   max_length: int, save_every: int) -> None:
    """Every option checked before any data or model is loaded: one line naming the option and its range."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be flipped or direct, not '{objective}'.")
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be fp32 or bf16, not '{precision}'.")
    if not (math.isfinite(unlikelihood_weight) and unlikelihood_weight >= 0):
        raise ConfigError(f"unlikelihood_weight must be a finite number >= 0, not {unlikelihood_weight}.")
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"learning_rate must be a positive number, not {learning_rate}.")
    for option, value, least in (("steps", steps, 1), ("batch_size", batch_size, 1),
                                 ("examples_per_task", examples_per_task, 1), ("max_wrong", max_wrong, 1),
                                 ("max_length", max_length, 2), ("save_every", save_every, 1)):
        if value < least:
            raise ConfigError(f"{option} must be at least {least}, not {value}.")


def _arguments(checkpoint: Checkpoint, tasks: Sequence[Task], objective: str, unlikelihood_weight: float,
               steps: int, batch_size: int, learning_rate: float, lora: bool, examples_per_task: int,
               max_wrong: int, seed: int, precision: str, max_length: int) -> dict[str, Any]:
    """What decides the trained weights (not the device, the progress display or how often state is saved): a
    resume state or a finished folder serves a call only when these are equal."""
    flipped = objective == "flipped"
    return {
        "base_fingerprint": checkpoint.fingerprint, "objective": objective,
        "tasks": [{"name": t.name, "fingerprint": t.fingerprint, "template": template_for(t).key()} for t in tasks],
        "unlikelihood_weight": unlikelihood_weight if flipped else None, "max_wrong": max_wrong if flipped else None,
        "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
        "lora": dict(LORA) if lora else None, "examples_per_task": examples_per_task, "seed": seed,
        "precision": precision, "max_length": max_length,
    }


def _source_task(tasks: Sequence[Task]) -> str:
    return "flip:" + "+".join(task.name for task in tasks)


def _final_loss(curve: Sequence[float]) -> float:
    return float(np.mean(curve[-LOSS_WINDOW:])) if curve else float("nan")


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return sorted(key for key in stored.keys() | wanted.keys() if stored.get(key) != wanted.get(key))


def _finished(out: Path, arguments: dict[str, Any], base: Checkpoint, source_task: str, store: Store | None,
              name: str | None) -> FlipTrainResult:
    """``out`` exists: return it when it is this run's finished result (a rerun is instant), else refuse."""
    try:
        provenance = json.loads((out / PROVENANCE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        provenance = {}
    if provenance.get("flip_train") != arguments:
        why = "holds another model or files" if "flip_train" not in provenance else (
            "holds a flip-train result with other " + ", ".join(_differences(provenance["flip_train"], arguments)))
        raise CheckpointError(f"{out}: already exists and {why}; choose another output folder or remove it.")
    saved = resolve_checkpoint(out)
    result = FlipTrainResult(
        checkpoint=str(saved.path), fingerprint=saved.fingerprint, base_fingerprint=base.fingerprint,
        objective=arguments["objective"], steps=arguments["steps"], final_loss=float(provenance["final_loss"]),
        loss_curve=tuple(provenance["loss_curve"]), seconds=float(provenance["seconds"]),
        tokens=int(provenance["tokens"]), reused=True)
    return _registered(result, saved, base, source_task, store, name)


def _registered(result: FlipTrainResult, saved: Checkpoint, base: Checkpoint, source_task: str,
                store: Store | None, name: str | None) -> FlipTrainResult:
    """Register the trained model (and its base, if new) in the store's zoo, with its lineage."""
    if store is None:
        return result
    register(store, base, only_if_new=True)
    entry = register(store, saved, name=name, source_task=source_task, base_fingerprint=base.fingerprint)
    return replace(result, zoo_name=entry.name)


# ---------------------------------------------------------------------------------------------------------------
# Resume state: beside the output, written atomically, read back only for the same arguments.


def _read_state(state_dir: Path, arguments: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state's ``state.json`` when one exists for these arguments; refuse one saved for others."""
    if not state_dir.exists():
        return None
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise CheckpointError(f"{state_dir}: the resume state is unreadable; remove it to start over.") from None
    if state.get("arguments") != arguments:
        differing = ", ".join(_differences(state.get("arguments") or {}, arguments))
        raise ConfigError(f"{state_dir}: a resume state of this output folder was saved with other arguments "
                          f"({differing}); rerun with the same ones to resume, or remove it to start over.")
    return state


class _Run:
    """One training run's live objects: the model (LoRA-wrapped or not), tokenizer, optimizer and schedule, and
    what it has done so far (steps, per-step losses, tokens, seconds)."""

    def __init__(self, checkpoint: Checkpoint, arguments: dict[str, Any], prompts: list[Prompt],
                 device: str | None, progress: ProgressCallback | None,
                 micro_batch_tokens: int | None = MICRO_BATCH_TOKENS) -> None:
        import torch  # lazy: torch stays off the CLI's --help path
        from transformers import get_linear_schedule_with_warmup  # lazy: transformers is slow to import

        configure_threads()
        self.arguments, self.prompts, self.progress = arguments, prompts, progress
        self.micro_batch_tokens = micro_batch_tokens
        self.device = resolve_device(device)
        prepare_device(self.device)
        torch.manual_seed(arguments["seed"])
        base = _plain(load_model(checkpoint)[0], checkpoint.name)
        if any(p.dtype != torch.float32 for p in base.parameters()):  # fp32 master weights; bf16 only by autocast
            base = base.float()
        self.keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        limit = _model_max_length(base.config, is_seq2seq=False)
        self.tokenizer = load_tokenizer(checkpoint)
        # the scorer's encoder, so training sees the tokens scoring will read
        self.encoder = LanguageModel(model=base, tokenizer=self.tokenizer, is_seq2seq=False,
                                     max_length=min(arguments["max_length"], limit))
        self.model = _with_lora(base, arguments["lora"]) if arguments["lora"] else base
        self.model.to(torch.device(self.device))
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        # No weight decay: runs are short, and decay would pull pretrained weights toward 0, not toward the base.
        self.optimizer = torch.optim.AdamW(self.parameters, lr=arguments["learning_rate"], weight_decay=0.0)
        steps = arguments["steps"]
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, math.ceil(WARMUP_RATIO * steps), steps)
        self.step, self.curve, self.tokens, self.seconds = 0, [], 0, 0.0

    def restore(self, state_dir: Path, state: dict[str, Any]) -> None:
        """Continue from a saved state: trainable weights, optimizer and schedule, RNG, progress so far."""
        import torch  # lazy: torch stays off the CLI's --help path
        from safetensors.torch import load_file  # lazy: imports torch

        try:
            weights = load_file(state_dir / "trainable.safetensors")
            extra = torch.load(state_dir / "optimizer.pt", map_location="cpu", weights_only=True)
            with torch.no_grad():
                for name, parameter in self._trainable():
                    parameter.copy_(weights[name])
            self.optimizer.load_state_dict(extra["optimizer"])
            self.scheduler.load_state_dict(extra["scheduler"])
        except Exception as error:  # a truncated or edited file fails in many ways; the fix is always the same
            raise CheckpointError(f"{state_dir}: the resume state is damaged ({type(error).__name__}: {error}); "
                                  "remove it to start over.") from None
        torch.set_rng_state(extra["rng"])
        if extra.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["cuda_rng"])
        self.step, self.curve = int(state["step"]), list(state["loss_curve"])
        self.tokens, self.seconds = int(state["tokens"]), float(state["seconds"])

    def train(self, state_dir: Path, save_every: int) -> None:
        import torch  # lazy: torch stays off the CLI's --help path

        steps = self.arguments["steps"]
        self.model.train()
        started, before = time.perf_counter(), self.seconds
        for step in range(self.step, steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss, tokens = self._backward(step)
            if not math.isfinite(loss):
                raise ConfigError(f"Step {step + 1}: the training loss is {loss}; lower the learning rate or "
                                  "train in fp32 (a resume state, if any, holds the last good step).")
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRAD_NORM)
            if not torch.isfinite(norm):
                raise ConfigError(f"Step {step + 1}: the gradient is not finite; lower the learning rate or train "
                                  "in fp32 (a resume state, if any, holds the last good step).")
            self.optimizer.step()
            self.scheduler.step()
            self.step, self.tokens = step + 1, self.tokens + tokens
            self.curve.append(loss)
            self.seconds = before + time.perf_counter() - started
            if self.step % save_every == 0 and self.step < steps:
                self._save_state(state_dir)
            if self.progress is not None:
                self.progress("flip-train", self.step, steps)

    def _backward(self, step: int) -> tuple[float, int]:
        """The objective on step ``step``'s examples, its gradient accumulated into the trainable weights:
        ``(loss, real tokens through the model)``. Each term is a mean over the step's tokens, so a pass over
        some rows adds its sum divided by the step's count (:func:`length_groups` decides the passes)."""
        import torch  # lazy: torch stays off the CLI's --help path

        arguments = self.arguments
        rows = []
        for index in step_examples(len(self.prompts), step, arguments["batch_size"], arguments["seed"]):
            prompt = self.prompts[index]
            wrong = (wrong_options(prompt, arguments["max_wrong"], arguments["seed"], step, index)
                     if arguments["objective"] == "flipped" else ())
            rows += example_requests(prompt, arguments["objective"], wrong)
        requests = _encode(self.encoder, [r[0] for r in rows], [r[1] for r in rows])
        gold_tokens = sum(len(q.continuation) for q, r in zip(requests, rows) if r[2])
        wrong_tokens = sum(len(q.continuation) for q, r in zip(requests, rows) if not r[2])
        total, tokens = 0.0, 0
        for group in length_groups([len(q.full) for q in requests], self.micro_batch_tokens):
            part = [requests[i] for i in group]
            ids, attention, keep, targets, gold = self._tensors(part, [rows[i][2] for i in group])
            kwargs = {"logits_to_keep": keep} if self.keeps_logits else {}
            with bf16_autocast(self.device, arguments["precision"] == "bf16"):
                logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False, **kwargs).logits
            if logits.dim() == 3:  # the model computed every position: keep the scored ones
                logits = logits[keep]
            logprobs = token_logprobs(logits, targets, torch.ones_like(targets, dtype=torch.bool))
            share = int(gold.sum()) / max(gold_tokens, 1)  # this pass's part of the step's mean over gold tokens
            loss = likelihood_loss(logprobs, gold) * share
            if arguments["objective"] == "flipped" and wrong_tokens:
                share = int((~gold).sum()) / wrong_tokens
                loss = loss + arguments["unlikelihood_weight"] * unlikelihood_loss(logprobs, ~gold) * share
            loss.backward()
            total += float(loss.item())
            tokens += int(attention.sum())
        return total, tokens

    def _tensors(self, requests: list, is_gold: list[bool]):
        """Right-padded ``(ids, attention)`` of shape ``(rows, longest)``; ``keep``, the same shape, marks the
        positions that predict a continuation token; ``targets`` and ``gold`` (is the row the gold option's?) list
        those tokens flat, in ``keep``'s row-major order (the order ``logits_to_keep`` returns logits in)."""
        import torch  # lazy: torch stays off the CLI's --help path

        longest = max(len(r.full) for r in requests)
        ids = torch.full((len(requests), longest), _pad_id(self.tokenizer), dtype=torch.long)
        attention = torch.zeros((len(requests), longest), dtype=torch.long)
        keep = torch.zeros((len(requests), longest), dtype=torch.bool)
        targets, gold = [], []
        for row, (request, row_is_gold) in enumerate(zip(requests, is_gold)):
            ids[row, :len(request.full)] = torch.tensor(request.full)
            attention[row, :len(request.full)] = 1
            first = len(request.context) - 1  # the position whose output predicts the first continuation token
            keep[row, first:first + len(request.continuation)] = True
            targets += request.continuation
            gold += [row_is_gold] * len(request.continuation)
        device = torch.device(self.device)
        return (ids.to(device), attention.to(device), keep.to(device), torch.tensor(targets, device=device),
                torch.tensor(gold, dtype=torch.bool, device=device))

    def _trainable(self):
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]

    def _save_state(self, state_dir: Path) -> None:
        """Trainable weights (safetensors), optimizer + schedule + RNG (torch.save: this private file is read back
        only by this code, with ``weights_only``) and progress (JSON), swapped in atomically."""
        import torch  # lazy: torch stays off the CLI's --help path
        from safetensors.torch import save_file  # lazy: imports torch

        weights = {name: p.detach().to("cpu").contiguous() for name, p in self._trainable()}
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.startswith("cuda") else None
        extra = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": torch.get_rng_state(), "cuda_rng": cuda_rng}
        state = {"step": self.step, "arguments": self.arguments, "loss_curve": self.curve, "tokens": self.tokens,
                 "seconds": self.seconds}
        with atomic_directory(state_dir, overwrite=True) as staging:
            save_file(weights, staging / "trainable.safetensors")
            torch.save(extra, staging / "optimizer.pt")
            (staging / "state.json").write_text(json.dumps(state, indent=1) + "\n")

    def merged_model(self):
        """The trained model as a plain transformers model: LoRA adapters merged into the weights, in eval mode."""
        model = self.model.merge_and_unload() if self.arguments["lora"] else self.model
        return model.eval()


def _plain(model, name: str):
    """``model`` without a quantizer left over from its config, or a clear refusal of really quantized weights.

    A folder of dequantized float tensors whose config.json still carries a ``quantization_config`` (as smollm2
    folders converted by upcycle before format 2 did) makes transformers attach a quantizer that changes nothing
    at run time yet refuses ``.float()`` and ``save_pretrained``. When every weight is a plain float tensor the
    quantizer is dropped, so the trained model saves as an ordinary (unquantized) checkpoint.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    if not all(parameter.dtype.is_floating_point for parameter in model.parameters()):
        method = getattr(quantizer.quantization_config, "quant_method", "quantized")
        raise ConfigError(f"{name}: its weights are quantized ({getattr(method, 'value', method)}) and cannot be "
                          "trained; flip-train needs a model with float weights.")
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model


def _with_lora(model, settings: dict[str, Any]):
    """``model`` wrapped by PEFT with LoRA adapters (only they train)."""
    from peft import LoraConfig, get_peft_model  # lazy: PEFT imports torch and transformers

    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=settings["target_modules"], task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT 0.21 asks transformers 5 a deprecated question; nothing for the user
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)
