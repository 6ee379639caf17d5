"""Expert LMs (Jang et al., ICML 2023): one expert per training task, Retrieval of Experts for an unseen task.

Jang et al. found that a causal LM finetuned on a single task can beat a multitask model on unseen tasks, and that
one expert per task avoids negative transfer, lets a new task be added without retraining (the other experts do
not change) and lets experts be composed by merging. This module is that recipe on upcycle's pieces:

* **Experts** (:func:`build_experts`): one :func:`~upcycle.scoring.flip_train` run per task with the DIRECT
  objective (LM loss on the answer given instruction + input; the task's template), LoRA by default, the
  adapters merged into an ordinary checkpoint and registered in the zoo with their lineage. An expert *is* such
  a run: a flip-train result whose provenance has objective ``direct`` and exactly one task (:func:`list_experts`).
* **Retrieval of Experts** (:func:`route`): ``INDEX_SIZE`` (100) training instances of each expert's task and
  ``QUERIES`` (32) instances of the target are written as ``"Answer Choices: {choices}, Instance: {input}"``
  (the text of the RoE reimplementation in PHATGOOSE's code; the choices joined with ", ") and embedded with
  all-MiniLM-L6-v2 (mean pooling); each query votes for the expert that owns its nearest (cosine) indexed
  instance, the vote of the ``retrieval`` selection estimator (:func:`upcycle.training.features.nearest_votes`).
  Experts are ranked by votes, ties (zero votes included) by the mean cosine of the queries to their nearest
  instance of that expert. Embeddings are cached in the store's feature table (per encoder, task fingerprint
  and text settings), so the index is built once and every later route only embeds what it has not seen.
* **Answering** (:func:`score_with_experts`, i.e. ``score(task, model="experts")``): the top-1 expert answers;
  with ``top_k`` > 1 the top experts are averaged uniformly by the merge engine (``linear``). For LoRA experts,
  whose saved weights are base + B A (scaled), the average is base + the mean of their LoRA deltas, i.e. the
  uniform merge of the adapters. Merged models are cached under ``$UPCYCLE_CACHE/merged-experts``, named by a
  hash of the inputs' fingerprints, so a repeated route reuses them.

Query instances are drawn at random (seed 0) from the target's test split without their labels: routing reads
only what a zero-shot user has, the unlabelled inputs and the label options.
"""

from __future__ import annotations

import hashlib
import json
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints import Checkpoint, resolve_checkpoint
from ..checkpoints.gguf import cache_root
from ..errors import ConfigError, TaskError
from ..specs import ProgressCallback
from ..store import Store, ZooEntry
from ..tasks import Split, Task, load_task, sample_indices
from ..tasks.prompts import Prompt, Template, template_for
from ..training.features import embed, mean_best_similarity, nearest_votes
from ..zoo import find_entry
from .flip_training import FlipTrainResult, flip_train
from .score import ScoreResult, score

EXPERT_TEXT = "Answer Choices: {choices}, Instance: {input}"
TEXT_FIELDS = ("choices", "input", "instruction")
INDEX_SIZE = 100  # training instances per expert (Jang et al.)
QUERIES = 32  # target instances that vote (Jang et al.)
ENCODER = "minilm"  # all-MiniLM-L6-v2, as in the paper
EMBED_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
INDEX_SEED = 0
DEFAULT_STEPS = 100
EXPERTS_MODEL = "experts"  # score(task, model="experts") routes to the experts
MERGED_FOLDER = "merged-experts"


@dataclass(frozen=True)
class Expert:
    """An expert LM of the zoo: a checkpoint trained (``flip_train``, DIRECT objective) on one task."""

    name: str
    fingerprint: str
    path: str
    task: str
    task_fingerprint: str
    template: str  # the key of the template it was trained with
    base_fingerprint: str
    lora: bool
    steps: int
    seed: int

    @classmethod
    def of(cls, entry: ZooEntry, provenance: dict[str, Any]) -> Expert | None:
        """The expert ``entry`` is, from its provenance; None when it is no expert."""
        arguments = provenance.get("flip_train") or {}
        tasks = arguments.get("tasks") or []
        if provenance.get("kind") != "flip-train" or arguments.get("objective") != "direct" or len(tasks) != 1:
            return None
        return cls(name=entry.name, fingerprint=entry.fingerprint, path=entry.path, task=tasks[0]["name"],
                   task_fingerprint=tasks[0]["fingerprint"], template=tasks[0]["template"],
                   base_fingerprint=arguments["base_fingerprint"], lora=arguments.get("lora") is not None,
                   steps=int(arguments["steps"]), seed=int(arguments["seed"]))


@dataclass(frozen=True)
class ExpertRoute:
    """Which experts Retrieval of Experts picks for a target, and the votes behind it.

    ``experts`` lists every candidate expert, best first; ``votes[i]`` is how many of the ``queries`` target
    instances had their nearest indexed instance in ``experts[i]``'s index, ``similarity[i]`` the mean cosine of
    the queries to their nearest instance of that expert (the tie-breaker). ``chosen`` are the top ``top_k``.
    """

    target: str
    target_fingerprint: str
    experts: tuple[Expert, ...]
    votes: tuple[int, ...]
    similarity: tuple[float, ...]
    top_k: int
    queries: int
    index_sizes: tuple[int, ...]
    encoder: str
    text_format: str
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def chosen(self) -> tuple[Expert, ...]:
        return self.experts[: self.top_k]

    def vote_counts(self) -> dict[str, int]:
        """``{expert name: votes}``, best first."""
        return {expert.name: votes for expert, votes in zip(self.experts, self.votes)}


# ---------------------------------------------------------------------------------------------------------------
# Pure parts: texts and the ranking.


def roe_text(prompt: Prompt, text_format: str = EXPERT_TEXT) -> str:
    """One instance as Retrieval of Experts embeds it: ``text_format`` filled with the prompt's options (joined by
    ", "), its input and its instruction."""
    return text_format.format(choices=", ".join(prompt.options), input=prompt.input, instruction=prompt.instruction)


def check_text_format(text_format: str) -> None:
    """Refuse a format naming fields other than ``{choices}``, ``{input}`` and ``{instruction}``, or none of them."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text_format) if name is not None]
    except ValueError as error:
        raise ConfigError(f"text_format '{text_format}' is not a valid format string ({error}).") from None
    unknown = sorted({name for name in fields if name not in TEXT_FIELDS})
    if unknown or "input" not in fields:
        raise ConfigError(f"text_format '{text_format}' must name {{input}} and may name {{choices}} and "
                          f"{{instruction}}" + (f", not {', '.join(unknown)}" if unknown else "") + ".")


def query_indices(count: int, queries: int, seed: int = 0) -> tuple[list[int], str | None]:
    """Which of ``count`` target instances vote: ``queries`` of them drawn at random with ``seed`` (ascending), or
    all of them, with a note saying so, when there are fewer."""
    if count <= queries:
        note = None if count == queries else (f"the target has {count} instances, fewer than {queries}: "
                                              f"all {count} vote")
        return list(range(count)), note
    return sample_indices([0] * count, queries, seed, stratify=False), None


def rank_experts(index: Sequence[np.ndarray], queries: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Rank experts by the Retrieval-of-Experts vote.

    Args:
        index: per expert, its indexed instances' embeddings ``(n_i, d)``.
        queries: the target instances' embeddings ``(q, d)``.

    Returns:
        ``(order, votes, similarity)``: expert indices best first (most votes, then the highest mean cosine of
        the queries to the expert's nearest instance, then the order given), votes ``(experts,)`` and that
        similarity ``(experts,)``.
    """
    votes = nearest_votes(list(index), queries)
    similarity = mean_best_similarity(list(index), queries)
    order = sorted(range(len(index)), key=lambda i: (-votes[i], -similarity[i], i))
    return order, votes, similarity


# ---------------------------------------------------------------------------------------------------------------
# The zoo's experts.


def list_experts(store: Store) -> list[Expert]:
    """Every expert LM in the zoo, by name."""
    experts = []
    for entry in store.checkpoints():
        expert = Expert.of(entry, store.provenance(entry.fingerprint))
        if expert is not None:
            experts.append(expert)
    return sorted(experts, key=lambda e: e.name)


def resolve_experts(store: Store, experts: Sequence[str] | None = None) -> list[Expert]:
    """The experts to route among: the ones named (zoo names or fingerprint prefixes), else all the zoo's.

    Refused, each in one line: an empty set; a named checkpoint that is no expert; two experts of one task (their
    indexes would be the same instances, so the vote could not tell them apart).
    """
    if experts is None:
        chosen = list_experts(store)
        if not chosen:
            raise ConfigError(f"The zoo of {store.path} holds no expert LMs; build them first with `upcycle experts "
                              "build --tasks A,B,...` (or upcycle.scoring.build_experts).")
    else:
        if not experts:
            raise ConfigError("experts names no expert; give zoo names or fingerprint prefixes, or leave it out "
                              "to route among all the zoo's experts.")
        chosen = []
        for reference in experts:
            entry = find_entry(store, reference)
            expert = Expert.of(entry, store.provenance(entry.fingerprint))
            if expert is None:
                raise ConfigError(f"{entry.name} is not an expert LM (a flip-train result with the direct objective "
                                  "on one task); see `upcycle experts list`.")
            if expert.fingerprint not in {e.fingerprint for e in chosen}:
                chosen.append(expert)
    by_task: dict[str, list[str]] = {}
    for expert in chosen:
        by_task.setdefault(expert.task_fingerprint, []).append(expert.name)
    doubled = [names for names in by_task.values() if len(names) > 1]
    if doubled:
        raise ConfigError(f"Several experts were trained on one task ({', '.join(doubled[0])}); routing cannot tell "
                          "them apart: choose one per task with --experts (experts=[...]).")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# Building experts.


def build_experts(
    model: str = "smollm2",
    tasks: Sequence[str | Path | Task] | str = (),
    out: str | Path = "runs/experts",
    *,
    lora: bool = True,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 8,
    learning_rate: float | None = None,
    examples_per_task: int = 500,
    seed: int = 0,
    device: str | None = "auto",
    precision: str = "fp32",
    max_length: int = 512,
    save_every: int = 50,
    store: Store | None = None,
    progress: ProgressCallback | None = None,
) -> list[FlipTrainResult]:
    """Train one expert per task (DIRECT objective, the task's template) and register each in the zoo.

    Each expert is ``flip_train(model, [task], out / f"expert-{task}", objective="direct", ...)``: resumable, and
    an expert already trained with these arguments is returned at once (``reused``). The other arguments are
    :func:`~upcycle.scoring.flip_train`'s. Returns the runs in task order.
    """
    names = [t for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
    loaded = [task if isinstance(task, Task) else load_task(str(task).strip()) for task in names]
    if not loaded:
        raise ConfigError("build_experts needs at least one task (--tasks A,B,...).")
    seen: set[str] = set()
    for task in loaded:
        if task.name in seen:
            raise ConfigError(f"Task '{task.name}' is listed twice; an expert is trained once per task.")
        seen.add(task.name)
        template_for(task)  # a regression task or a bad template fails before any training
    folder = Path(out).expanduser()
    results = []
    for task in loaded:
        if store is not None:  # where its data lives, so routing can index a task that is no shared name
            store.put_task(fingerprint=task.fingerprint, name=task.name, source=task.source, kind=task.kind,
                           num_labels=task.num_labels, sizes=task.sizes())
        labelled = None if progress is None else _labelled(progress, f"expert {task.name}")
        results.append(flip_train(
            model, [task], folder / f"expert-{task.name}", objective="direct", steps=steps, batch_size=batch_size,
            learning_rate=learning_rate, lora=lora, examples_per_task=examples_per_task, seed=seed, device=device,
            precision=precision, max_length=max_length, save_every=save_every, store=store, progress=labelled))
    return results


def _labelled(progress: ProgressCallback, label: str) -> ProgressCallback:
    return lambda _phase, done, total: progress(label, done, total)


# ---------------------------------------------------------------------------------------------------------------
# Routing.


def route(
    target: str | Path | Task,
    *,
    store: Store,
    experts: Sequence[str] | None = None,
    top_k: int = 1,
    queries: int = QUERIES,
    index_size: int = INDEX_SIZE,
    encoder: str = ENCODER,
    text_format: str = EXPERT_TEXT,
    template: str | Path | Template | None = None,
    split: str = "test",
    seed: int = 0,
    device: str | None = "auto",
) -> ExpertRoute:
    """Retrieval of Experts: rank the zoo's experts for ``target`` by the votes of its instances.

    Args:
        target: the unseen task (a reference or a loaded :class:`Task`).
        store: whose zoo holds the experts; embeddings are cached in it.
        experts: route among these (zoo names or fingerprint prefixes); default: every expert of the zoo.
        top_k: how many experts :attr:`ExpertRoute.chosen` holds.
        queries: target instances that vote (drawn at random with ``seed`` from ``split``, labels unused); a
            target with fewer uses them all, and the route's notes say so.
        index_size: training instances indexed per expert (a stratified sample, seed 0).
        encoder: the sentence encoder (default all-MiniLM-L6-v2); any encoder checkpoint reference.
        text_format: how an instance is written; fields ``{choices}``, ``{input}``, ``{instruction}``.
        template: the target's template (default: the one :func:`template_for` picks).
    """
    started = time.perf_counter()
    for option, value in (("top_k", top_k), ("queries", queries), ("index_size", index_size)):
        if value < 1:
            raise ConfigError(f"{option} must be at least 1, not {value}.")
    check_text_format(text_format)
    candidates = resolve_experts(store, experts)
    if top_k > len(candidates):
        raise ConfigError(f"top_k is {top_k} but there are only {len(candidates)} experts to choose from "
                          f"({', '.join(e.name for e in candidates)}).")
    loaded = target if isinstance(target, Task) else load_task(target)
    if split not in loaded.splits or not len(loaded.splits[split]):
        raise TaskError(f"Task '{loaded.name}' has no {split} instances to route with.")
    target_template = template if isinstance(template, Template) else template_for(loaded, template)
    notes = []
    instances = loaded.splits[split]
    chosen_queries, note = query_indices(len(instances), queries, seed)
    if note is not None:
        notes.append(f"{loaded.name}: {note}")
    encoder_checkpoint = resolve_checkpoint(encoder)
    settings = f"len={EMBED_LENGTH}:text={_digest(text_format)}"

    def query_texts() -> list[str]:
        return [roe_text(p, text_format) for p in target_template.prompts(instances.take(chosen_queries))]

    query_key = (f"roe-queries:{split}:n={queries}:seed={seed}:template={target_template.key()[:16]}:"
                 f"{settings}")
    query_features = _embedded(store, encoder_checkpoint, loaded.fingerprint, query_key, query_texts, device)
    index = []
    for expert in candidates:
        if expert.task_fingerprint == loaded.fingerprint:
            notes.append(f"{loaded.name} is the task {expert.name} was trained on: it is not unseen")
        index_key = f"roe-index:train:n={index_size}:seed={INDEX_SEED}:template={expert.template[:16]}:{settings}"
        texts = _IndexTexts(store, expert, index_size, text_format, notes)
        index.append(_embedded(store, encoder_checkpoint, expert.task_fingerprint, index_key, texts, device))
    order, votes, similarity = rank_experts(index, query_features)
    return ExpertRoute(
        target=loaded.name, target_fingerprint=loaded.fingerprint, experts=tuple(candidates[i] for i in order),
        votes=tuple(int(votes[i]) for i in order), similarity=tuple(float(similarity[i]) for i in order),
        top_k=top_k, queries=len(chosen_queries), index_sizes=tuple(len(index[i]) for i in order),
        encoder=encoder_checkpoint.name, text_format=text_format, seconds=time.perf_counter() - started,
        notes=tuple(notes))


class _IndexTexts:
    """An expert's indexed instances, loaded only on a cache miss: its training task (found through the store's
    task table, else as a shared task name), checked against the fingerprint it was trained on."""

    def __init__(self, store: Store, expert: Expert, size: int, text_format: str, notes: list[str]) -> None:
        self.store, self.expert, self.size, self.text_format, self.notes = store, expert, size, text_format, notes

    def __call__(self) -> list[str]:
        expert = self.expert
        where = self.store.task_source(expert.task_fingerprint) or expert.task
        try:
            task = load_task(where)
        except TaskError as error:
            raise TaskError(f"The training data of expert {expert.name} ({expert.task}) cannot be loaded to index it "
                            f"({error}); restore it, or route without this expert (--experts).") from None
        if task.fingerprint != expert.task_fingerprint:
            raise TaskError(f"{where}: the training data of expert {expert.name} changed since it was trained; "
                            "rebuild the expert, or route without it (--experts).")
        template = template_for(task)
        if template.key() != expert.template:
            self.notes.append(f"{expert.name}: its task's template changed since it was trained; indexed with "
                              "the current one")
        train = task.subsample(self.size, None, INDEX_SEED).splits["train"]
        return [roe_text(p, self.text_format) for p in template.prompts(train)]


def _embedded(store: Store, encoder: Checkpoint, task_fingerprint: str, key: str, texts, device) -> np.ndarray:
    """``(n, d)`` embeddings of ``texts()`` through ``encoder``, from the store's feature cache when there."""
    found = store.get_features(encoder.fingerprint, task_fingerprint, key)
    if found is not None:
        return found[0]
    written = texts()
    started = time.process_time()
    split = Split(texts=tuple(written), labels=tuple(0 for _ in written))
    features = embed(encoder, split, max_length=EMBED_LENGTH, device=device)
    store.put_features(encoder.fingerprint, task_fingerprint, key, features, time.process_time() - started)
    return features


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Merging and answering.


def merge_experts(experts: Sequence[Expert], out: str | Path | None = None) -> Checkpoint:
    """The uniform average of ``experts`` (the merge engine's ``linear``), cached: one expert is returned as is;
    an existing merge of the same experts (the folder is named by a hash of their fingerprints) is reused.

    Experts trained from different bases are refused: their deltas do not share an origin.
    """
    if not experts:
        raise ConfigError("merge_experts needs at least one expert.")
    if len(experts) == 1:
        return resolve_checkpoint(experts[0].path)
    bases = {e.base_fingerprint for e in experts}
    if len(bases) > 1:
        listing = ", ".join(f"{e.name} (base {e.base_fingerprint[:12]})" for e in experts)
        raise ConfigError(f"Cannot merge experts trained from different base models: {listing}. Merging needs one "
                          "common base: answer with the top expert alone (top_k 1), or route among experts of one "
                          "base (--experts).")
    fingerprints = sorted(e.fingerprint for e in experts)
    key = hashlib.sha256(json.dumps(fingerprints).encode()).hexdigest()
    folder = Path(out).expanduser() if out is not None else cache_root() / MERGED_FOLDER
    target = folder / f"experts-{len(experts)}-{key[:16]}"
    if target.exists():
        return resolve_checkpoint(target)
    from ..merging import merge  # lazy: the merge engine imports torch

    config = {"merge_method": "linear", "dtype": "float32",
              "models": [{"model": e.path, "parameters": {"weight": 1.0}} for e in experts]}
    return merge(config, target)


def score_with_experts(
    task: str | Path | Task,
    *,
    store: Store | None,
    top_k: int = 1,
    experts: Sequence[str] | None = None,
    template: str | Path | Template | None = None,
    device: str | None = "auto",
    merged_dir: str | Path | None = None,
    **options: Any,
) -> list[ScoreResult]:
    """Score ``task`` zero-shot with the expert(s) Retrieval of Experts picks: the top one, or the uniform merge
    of the top ``top_k``. ``options`` are :func:`~upcycle.scoring.score`'s (method, normalize, ...).

    The stored result is the answering model's own (keyed by its fingerprint, so scoring that checkpoint
    directly finds it); the returned results name the experts that answered (``answered_by``) and carry the
    ``route``.
    """
    if store is None:
        raise ConfigError("model 'experts' needs a store: the experts are the zoo's (--db).")
    loaded = task if isinstance(task, Task) else load_task(task)
    target_template = template if isinstance(template, Template) else template_for(loaded, template)
    chosen = route(loaded, store=store, experts=experts, top_k=top_k, template=target_template, device=device)
    answering = merge_experts(chosen.chosen, merged_dir)
    results = score(loaded, str(answering.path), template=target_template, store=store, device=device, **options)
    names = tuple(expert.name for expert in chosen.chosen)
    return [replace(result, answered_by=names, route=chosen) for result in results]


def expert_scores(
    task: str | Path | Task,
    *,
    store: Store,
    experts: Sequence[str] | None = None,
    method: str = "direct",
    **options: Any,
) -> dict[str, ScoreResult]:
    """Every expert's zero-shot result on ``task`` with one ``method``, by expert name: the oracle expert (the
    best on the test labels, an upper bound for any router) and a random expert (their mean) are read off it."""
    loaded = task if isinstance(task, Task) else load_task(task)
    results = {}
    for expert in resolve_experts(store, experts):
        (result,) = score(loaded, expert.path, method=method, store=store, **options)
        results[expert.name] = replace(result, answered_by=(expert.name,))
    return results
