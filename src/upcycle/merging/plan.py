"""Pre-flight: everything a merge can check before reading a single tensor, and the plan it follows.

From ``config.json`` files, tokenizer files and safetensors headers only, :func:`plan_merge` checks that the
models agree on architecture family, geometry, vocabulary, tokenizer, tensor names and shapes, and (when
upcycle's provenance records it) that they were finetuned from one base. Each mismatch is one
:class:`MergeError` that names the model and the field. The resulting :class:`MergePlan` lists every output
tensor with its source names, shape, dtype and resolved parameters; the engine only executes it.

Naming. Hugging Face stores a body under a prefix in task models (``bert.encoder...`` in
``BertForSequenceClassification``) and without it in bare ones (``encoder...`` in ``BertModel``); tensors are
matched on the name without the body prefix. Task heads (``classifier.*`` of ``*ForSequenceClassification``
and the like) are not part of the body: they are dropped by default (the output is the bare body class, e.g.
``BertModel``) or, with ``heads: merge``, merged when every input has them with the same shapes. Language
model heads (``lm_head`` of decoders) are ordinary tensors and always merged.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import ArchKey, Checkpoint, TensorEntry, resolve_checkpoint
from ..checkpoints.streaming import DTYPES, OutputTensor, assign_shards, read_entries
from ..errors import CheckpointError, MergeError
from .config import MergeConfig, TensorPlan, plan_for

TASK_HEAD_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification", "ForMultipleChoice",
                      "ForQuestionAnswering")
LABEL_KEYS = ("id2label", "label2id", "num_labels", "problem_type", "finetuning_task")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "chat_template.jinja")
OUTPUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GEOMETRY = ("num_layers", "hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings")


def _body_prefix(architecture: str, names: list[str]) -> str:
    """The attribute a task model keeps its body under (``bert``, ``model``...), read from the tensor names: the
    first component most names share. Bare models (``BertModel``) store their body without one."""
    if architecture.endswith("Model") or not names:
        return ""
    first, count = Counter(name.split(".", 1)[0] for name in names if "." in name).most_common(1)[0]
    return first if count > len(names) / 2 else ""


def _body_class(architecture: str) -> str | None:
    """``BertForSequenceClassification`` -> ``BertModel``: Hugging Face's naming of the bare body class."""
    stem, found, _ = architecture.partition("For")
    return f"{stem}Model" if found and stem else None


def tokenizer_identity(folder: Path) -> str | None:
    """A hash of the vocabulary (tokens, ids, added tokens), independent of padding or truncation settings;
    None when the folder has no tokenizer files."""
    digest = hashlib.sha256()
    file = folder / "tokenizer.json"
    if file.exists():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            model = data["model"]
            added = sorted((t["content"], t["id"]) for t in data.get("added_tokens", []))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{file}: unreadable tokenizer ({error}).") from None
        digest.update(json.dumps([model.get("type"), model.get("vocab"), model.get("merges"), added],
                                 sort_keys=True).encode())
        return digest.hexdigest()
    files = [folder / name for name in ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                                        "sentencepiece.bpe.model") if (folder / name).exists()]
    for file in files:
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest() if files else None


@dataclass
class ModelInfo:
    """One model of the merge, described from its config and headers."""

    reference: str
    checkpoint: Checkpoint
    config: dict[str, Any]
    entries: dict[str, TensorEntry]
    prefix: str

    @classmethod
    def read(cls, reference: str) -> ModelInfo:
        checkpoint = resolve_checkpoint(reference)
        config = checkpoint.config
        entries = read_entries(checkpoint.weight_files)
        architecture = (config.get("architectures") or ["?"])[0]
        return cls(reference, checkpoint, config, entries, _body_prefix(architecture, list(entries)))

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]

    @property
    def has_task_head(self) -> bool:
        return self.architecture.endswith(TASK_HEAD_SUFFIXES)

    @cached_property
    def arch(self) -> ArchKey:
        return ArchKey.from_config(self.config)

    def canonical(self, stored: str) -> str:
        head = f"{self.prefix}."
        return stored[len(head):] if self.prefix and stored.startswith(head) else stored

    @cached_property
    def heads(self) -> dict[str, TensorEntry]:
        """Task-head tensors (outside the body of a task model), by stored name."""
        if not self.has_task_head:
            return {}
        head = f"{self.prefix}."
        return {name: entry for name, entry in self.entries.items() if not name.startswith(head)}

    @cached_property
    def body(self) -> dict[str, str]:
        """canonical name -> stored name, for every tensor that is not a task head."""
        body = {self.canonical(name): name for name in self.entries if name not in self.heads}
        if len(body) != len(self.entries) - len(self.heads):
            raise MergeError(f"{self.reference}: tensor names collide once the '{self.prefix}.' prefix is removed.")
        return body

    @property
    def recorded_base(self) -> str | None:
        provenance = self.checkpoint.provenance or {}
        return provenance.get("base_fingerprint")


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: where it comes from and how it is made.

    ``canonical`` is the name without the body prefix; ``sources`` holds the stored name in each merged model
    (same order as the plan's ``inputs``) and ``base_source`` the stored name in the base (None when there is
    no base or the tensor is a head the base lacks). ``action`` is ``merge`` (floating tensors), ``average``
    (heads merged without a base) or ``copy`` (integer buffers, taken from the reference model).
    """

    output: OutputTensor
    action: str
    canonical: str
    sources: tuple[str, ...]
    base_source: str | None
    parameters: TensorPlan


@dataclass
class MergePlan:
    config: MergeConfig
    inputs: list[ModelInfo]
    base: ModelInfo | None
    reference: ModelInfo
    output_config: dict[str, Any]
    tensors: list[PlannedTensor]
    heads: str  # "dropped", "merged" or "none"
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[ModelInfo]:
        """Every model read: the inputs, then the base when it is not one of them (the reference is either)."""
        return self.inputs + ([self.base] if self.base is not None and self.base not in self.inputs else [])

    @property
    def output_bytes(self) -> int:
        return sum(t.output.nbytes for t in self.tensors)

    @property
    def working_bytes(self) -> int:
        """Rough peak of merge buffers: the largest tensor in float32 times (models + 2)."""
        largest = max((t.output.nbytes // t.output.dtype.itemsize for t in self.tensors), default=0)
        return largest * 4 * (len(self.inputs) + 2)

    @property
    def tokenizer_source(self) -> ModelInfo:
        return self.base or self.reference


def plan_merge(config: MergeConfig) -> MergePlan:
    """Check the models against each other from metadata alone and plan every output tensor.

    Raises:
        CheckpointError: a model cannot be resolved or its files are unreadable.
        MergeError: the models cannot be merged; the message names the model and what differs.
    """
    inputs = [ModelInfo.read(reference) for reference in config.inputs]
    base = ModelInfo.read(config.base_model) if config.base_model else None
    if base is not None and any(m.reference == base.reference for m in inputs):
        base = next(m for m in inputs if m.reference == base.reference)
    reference = base or inputs[0]
    models = inputs + ([base] if base is not None and base not in inputs else [])
    notes: list[str] = []
    _check_architecture(models, reference)
    _check_tokenizers(models, reference, notes)
    heads = _decide_heads(config, inputs, notes)
    _check_tensors(models, reference)
    _check_common_base(inputs, base, notes)
    tensors = _plan_tensors(config, inputs, base, reference, heads, notes)
    _check_model_trim(config, tensors)
    return MergePlan(config, inputs, base, reference, _output_config(config, inputs, reference, heads), tensors,
                     heads, notes)


def trimmed_tensors(plan: MergePlan) -> list[PlannedTensor]:
    """The tensors a whole-model trim ranks together: every merged tensor with a base value (heads included
    when they are merged)."""
    return [t for t in plan.tensors if t.action == "merge" and t.base_source is not None]


def _check_model_trim(config: MergeConfig, tensors: list[PlannedTensor]) -> None:
    if config.trim_scope != "model":
        return
    densities = {t.parameters.densities for t in tensors if t.action == "merge"}
    if len(densities) > 1:
        raise MergeError("trim_scope: model keeps the top density of each model's whole task vector, so each model "
                         f"needs one density for all its tensors; the config resolves to {sorted(densities)}.")


def _check_architecture(models: list[ModelInfo], reference: ModelInfo) -> None:
    for model in models:
        if model.arch.model_type != reference.arch.model_type:
            raise MergeError(f"{model.reference} is a '{model.arch.model_type}' model and {reference.reference} a "
                             f"'{reference.arch.model_type}' one: only checkpoints of one architecture merge.")
        if model.arch.vocab_size != reference.arch.vocab_size:
            raise MergeError(f"{model.reference} has a vocabulary of {model.arch.vocab_size} tokens and "
                             f"{reference.reference} {reference.arch.vocab_size}: embeddings cannot be merged.")
        for name in GEOMETRY:
            ours, theirs = getattr(model.arch, name), getattr(reference.arch, name)
            if ours != theirs:
                raise MergeError(f"{model.reference} has {name}={ours} and {reference.reference} {name}={theirs}: "
                                 "the models differ in shape and cannot be merged.")


def _check_tokenizers(models: list[ModelInfo], reference: ModelInfo, notes: list[str]) -> None:
    identities = {m.reference: tokenizer_identity(m.checkpoint.path) for m in models}
    known = {ref: ident for ref, ident in identities.items() if ident is not None}
    if len(set(known.values())) > 1:
        ours = identities.get(reference.reference) or next(iter(known.values()))
        odd = [ref for ref, ident in known.items() if ident != ours]
        raise MergeError(f"Tokenizers differ: {', '.join(odd)} map tokens to ids differently from "
                         f"{reference.reference}; merged embeddings would mix unrelated tokens.")
    missing = [ref for ref, ident in identities.items() if ident is None]
    if missing:
        notes.append(f"no tokenizer files in {', '.join(missing)}: tokenizer identity not checked for them")


def _decide_heads(config: MergeConfig, inputs: list[ModelInfo], notes: list[str]) -> str:
    with_heads = [m for m in inputs if m.has_task_head]
    if not with_heads:
        return "none"
    if config.heads == "drop":
        notes.append("task heads dropped (heads: drop); the output is the bare body")
        return "dropped"
    layouts = {tuple(sorted((name, m.heads[name].shape) for name in m.heads)) for m in inputs}
    if len(with_heads) == len(inputs) and len(layouts) == 1:
        labels = {json.dumps(m.config.get("id2label"), sort_keys=True) for m in inputs}
        if len(labels) > 1:
            notes.append("heads merged although the inputs' label names differ; the output keeps "
                         f"{inputs[0].reference}'s labels")
        return "merged"
    notes.append("heads: merge was asked, but the inputs' heads differ in names or shapes: dropped")
    return "dropped"


def _check_tensors(models: list[ModelInfo], reference: ModelInfo) -> None:
    """Every floating body tensor must exist, with one shape, in every model."""

    def floating(model: ModelInfo) -> dict[str, tuple[int, ...]]:
        return {name: model.entries[stored].shape for name, stored in model.body.items()
                if model.entries[stored].floating}

    expected = floating(reference)
    for model in models:
        if model is reference:
            continue
        found = floating(model)
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks {len(missing)} tensor(s) {reference.reference} has ({', '.join(missing[:3])})")
            if extra:
                parts.append(f"has {len(extra)} tensor(s) {reference.reference} lacks ({', '.join(extra[:3])})")
            raise MergeError(f"{model.reference} {' and '.join(parts)}: the models do not share one architecture.")
        for name, shape in expected.items():
            if found[name] != shape:
                raise MergeError(f"{model.reference}: tensor '{name}' has shape {list(found[name])}, "
                                 f"{reference.reference} has {list(shape)}.")


def _check_common_base(inputs: list[ModelInfo], base: ModelInfo | None, notes: list[str]) -> None:
    recorded = {m.reference: m.recorded_base for m in inputs if m.recorded_base}
    if len(set(recorded.values())) > 1:
        listing = "; ".join(f"{ref} from {fp[:12]}" for ref, fp in recorded.items())
        raise MergeError(f"The inputs were finetuned from different base models ({listing}); "
                         "merging needs one common base.")
    if not recorded:
        notes.append("no upcycle provenance on the inputs: their common base is not checked")
        return
    common = next(iter(recorded.values()))
    if base is not None and base.checkpoint.fingerprint != common:
        raise MergeError(f"base_model {base.reference} ({base.checkpoint.fingerprint[:12]}) is not the model "
                         f"the inputs were finetuned from ({common[:12]}): their deltas would be meaningless.")


def _plan_tensors(config: MergeConfig, inputs: list[ModelInfo], base: ModelInfo | None, reference: ModelInfo,
                  heads: str, notes: list[str]) -> list[PlannedTensor]:
    out_dtype = OUTPUT_DTYPES[config.dtype]
    bare = _is_bare(reference, heads)
    layout = inputs[0] if heads == "merged" else reference  # whose stored names the output keeps
    planned: list[PlannedTensor] = []
    skipped: list[str] = []
    for name in sorted(reference.body):
        stored = reference.body[name]
        entry = reference.entries[stored]
        out_name = name if bare else layout.body.get(name, stored)
        if not entry.floating:
            if all(name in m.body for m in inputs):
                planned.append(PlannedTensor(OutputTensor(out_name, DTYPES[entry.dtype], entry.shape), "copy",
                                             name, (), None, plan_for(config, out_name)))
            else:
                skipped.append(name)
            continue
        planned.append(PlannedTensor(
            OutputTensor(out_name, out_dtype, entry.shape), "merge", name, tuple(m.body[name] for m in inputs),
            base.body[name] if base is not None else None, plan_for(config, out_name)))
    if skipped:
        notes.append(f"left out integer buffer(s) not in every input: {', '.join(skipped)}")
    if heads == "merged":
        needs_base = base is not None and config.method.needs_base
        for name in sorted(inputs[0].heads):
            in_base = base is not None and name in base.heads
            action = "merge" if (in_base or not needs_base) else "average"
            planned.append(PlannedTensor(
                OutputTensor(name, out_dtype, inputs[0].heads[name].shape), action, name, tuple(name for _ in inputs),
                name if in_base else None, plan_for(config, name)))
        if needs_base and not any(name in base.heads for name in inputs[0].heads):
            notes.append("the base has no task head: heads are the weighted average of the inputs' heads")
    return planned


def _is_bare(reference: ModelInfo, heads: str) -> bool:
    """Whether the output is the bare body class (task heads dropped, or a task-model base without inputs'
    heads), stored without the body prefix."""
    return heads == "dropped" or (heads == "none" and reference.has_task_head)


def _output_config(config: MergeConfig, inputs: list[ModelInfo], reference: ModelInfo, heads: str) -> dict[str, Any]:
    source = inputs[0] if heads == "merged" else reference
    result = dict(source.config)
    if _is_bare(reference, heads):
        for key in LABEL_KEYS:
            result.pop(key, None)
        body = _body_class(reference.architecture)
        if body:
            result["architectures"] = [body]
    result.pop("torch_dtype", None)
    result["dtype"] = config.dtype
    return result


def describe(plan: MergePlan, max_shard_bytes: int) -> dict[str, Any]:
    """A plain summary of the plan for ``--dry-run``: models, output, parameter groups, notes."""
    groups = Counter((t.action, t.parameters) for t in plan.tensors)
    return {
        "method": plan.config.merge_method,
        **({"trim_scope": plan.config.trim_scope} if plan.config.method.trims_by_magnitude else {}),
        "models": [{"model": m.reference, "role": "base" if m is plan.base else "input", "architecture": m.architecture,
                    "arch": str(m.arch), "tensors": len(m.entries),
                    "bytes": sum(e.end - e.begin for e in m.entries.values())}
                   for m in plan.models],
        "output": {"architecture": (plan.output_config.get("architectures") or ["?"])[0],
                   "tensors": len(plan.tensors), "bytes": plan.output_bytes, "dtype": plan.config.dtype,
                   "shards": len(assign_shards([t.output for t in plan.tensors], max_shard_bytes)),
                   "heads": plan.heads, "tokenizer_from": plan.tokenizer_source.reference},
        "working_bytes": plan.working_bytes,
        "parameter_groups": [{"action": action, "tensors": count, "weights": list(p.weights),
                              "densities": list(p.densities), "lambda": p.lam, "normalize": p.normalize, "t": p.t}
                             for (action, p), count in groups.most_common()],
        "notes": list(plan.notes),
    }
