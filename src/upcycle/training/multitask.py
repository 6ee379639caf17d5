"""The multitask baseline of ColD Fusion: one shared body finetuned on every contributor's data at once.

This is what fusion is compared with when privacy is given up: all data in one place. Each task keeps its
own classification head (a sequence classifier per task whose body is one shared module); each epoch goes
through every task's training batches in one shuffled order, so tasks are sampled in proportion to their
size. Only the body is saved (the bare model class), like a fused base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np

from ..checkpoints import (
    Checkpoint,
    load_for_classification,
    load_tokenizer,
    resolve_checkpoint,
    save_checkpoint,
)
from ..errors import UpcycleError
from ..protocols import Protocol
from ..tasks import load_task
from .batching import encode, train_batches
from .devices import resolve_device
from .loop import DivergenceCheck, adamw_with_schedule, configure_threads, train_step


class Source(TypingProtocol):
    """A named dataset: a fusion :class:`~upcycle.fusion.Contributor` is one."""

    name: str
    data: str


def train_multitask(base: str | Checkpoint, sources: Sequence[Source], out: str | Path, *, protocol: Protocol,
                    seed: int = 0, device: str | None = None) -> Checkpoint:
    """Finetune ``base`` on all ``sources`` together (``protocol``'s sample, epochs, learning rate) and save
    the shared body to ``out``; an existing ``out`` made from the same settings is returned as is."""
    checkpoint = base if isinstance(base, Checkpoint) else resolve_checkpoint(base)
    settings = {"kind": "multitask", "base_fingerprint": checkpoint.fingerprint, "base_name": checkpoint.name,
                "tasks": sorted(s.name for s in sources), "protocol": protocol.model_dump(), "seed": seed}
    done = _existing(Path(out), settings)
    if done is not None:
        return done
    configure_threads()
    device = resolve_device(device)
    tokenizer = load_tokenizer(checkpoint)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tasks = [load_task(s.data, name=s.name).subsample(protocol.max_train, protocol.max_eval, seed=protocol.data_seed)
             for s in sources]
    models = [load_for_classification(checkpoint, task.label_names, seed + i).to(device)
              for i, task in enumerate(tasks)]
    body = models[0].base_model
    for model in models[1:]:
        setattr(model, model.base_model_prefix, body)  # one body, a head per task
    data = [encode(tokenizer, task.splits["train"], protocol.max_length, task.kind == "regression") for task in tasks]

    parameters = list({id(p): p for model in models for p in model.parameters()}.values())
    steps = sum(-(-len(d) // protocol.batch_size) for d in data) * protocol.epochs
    optimizer, scheduler = adamw_with_schedule(parameters, protocol,
                                               protocol.learning_rate_for(checkpoint.arch.model_type), steps)
    rng = np.random.default_rng(seed)
    for model in models:
        model.train()
    divergence = DivergenceCheck()
    for epoch in range(protocol.epochs):
        schedule = [(t, batch) for t, d in enumerate(data)
                    for batch in train_batches(d.lengths, protocol.batch_size, rng, protocol.length_grouping)]
        for position in rng.permutation(len(schedule)):
            t, indices = schedule[position]
            loss = train_step(models[t], data[t], indices, pad_id, protocol, parameters, optimizer, scheduler, device)
            divergence.add(loss, f"epoch {epoch + 1}")
        divergence.check(f"epoch {epoch + 1}")
    settings["n_train"] = {task.name: len(d) for task, d in zip(tasks, data, strict=True)}
    return save_checkpoint(body, tokenizer, Path(out), settings, overwrite=True)


def _existing(out: Path, settings: dict[str, Any]) -> Checkpoint | None:
    if not out.exists():
        return None
    try:
        found = resolve_checkpoint(out)
    except UpcycleError:
        return None
    recorded = {key: (found.provenance or {}).get(key) for key in settings}
    return found if recorded == json.loads(json.dumps(settings)) else None
