"""The one door to transformers: tokenizers and models loaded safely (safetensors, never remote code)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .resolve import Checkpoint


def load_tokenizer(checkpoint: Checkpoint):
    from transformers import AutoTokenizer  # lazy: transformers is slow to import

    try:
        return AutoTokenizer.from_pretrained(checkpoint.path, trust_remote_code=False)
    except Exception as error:
        raise CheckpointError(f"{checkpoint.path}: no usable tokenizer ({type(error).__name__}: {error}).") from None


def load_for_classification(checkpoint: Checkpoint, label_names: tuple[str, ...] | None, seed: int):
    """A sequence-classification model with the checkpoint's body and a head fit for ``label_names``.

    The checkpoint's own head is kept only when it was trained on exactly these labels (same names, same
    order, or the same regression target); otherwise a new head is initialised from ``seed``.
    ``label_names=None`` means regression (one output).
    """
    import torch  # lazy: torch stays off the CLI's --help path
    from transformers import AutoModelForSequenceClassification  # lazy: transformers is slow to import

    num_labels = 1 if label_names is None else len(label_names)
    problem_type = "regression" if label_names is None else "single_label_classification"
    keep_head = _head_matches(checkpoint, label_names)
    extra: dict[str, Any] = {"num_labels": num_labels, "problem_type": problem_type}
    if label_names is not None:
        extra["id2label"] = dict(enumerate(label_names))
        extra["label2id"] = {name: i for i, name in enumerate(label_names)}
    torch.manual_seed(seed)
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                checkpoint.path,
                use_safetensors=not checkpoint.is_pickle,
                trust_remote_code=False,
                ignore_mismatched_sizes=True,
                **extra,
            )
    except Exception as error:
        raise CheckpointError(
            f"{checkpoint.path}: cannot load as a sequence classifier ({type(error).__name__}: {error})."
        ) from None
    if not keep_head:
        reinitialize(head_modules(model), model, seed)
    check_finite(model, checkpoint.path)
    return model


def load_language_model(checkpoint: Checkpoint):
    """A generative LM for scoring: ``(model, is_seq2seq)``, in eval mode, its weights checked finite.

    Encoder-decoder configs (T5, BART) load as seq2seq LMs, everything else as causal LMs. A checkpoint without
    a trained output layer (an encoder such as MiniLM, whose LM head transformers would initialise at random) is
    refused: its scores would be noise.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # lazy: transformers is slow to import

    is_seq2seq = bool(checkpoint.config.get("is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    try:
        with quiet_transformers():
            model, info = auto.from_pretrained(checkpoint.path, use_safetensors=not checkpoint.is_pickle,
                                               trust_remote_code=False, output_loading_info=True)
    except Exception as error:
        raise CheckpointError(
            f"{checkpoint.path}: cannot load as a {'seq2seq' if is_seq2seq else 'causal'} language model "
            f"({type(error).__name__}: {str(error)[:200]}); zero-shot scoring needs a generative LM with an LM head."
        ) from None
    missing = [name for name in info.get("missing_keys", []) if "head" in name or "predictions" in name
               or name.endswith("decoder.weight")]
    if missing:
        raise CheckpointError(
            f"{checkpoint.path}: has no trained language-model head (missing {', '.join(sorted(missing)[:3])}); "
            "zero-shot scoring needs a causal or seq2seq LM (for example smollm2), not an encoder."
        )
    check_finite(model, checkpoint.path)
    return model.eval(), is_seq2seq


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (upcycle draws its own)."""
    from transformers.utils import logging as hf_logging  # lazy: transformers is slow to import

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def reinitialize(modules: list, model, seed: int) -> None:
    """Draw fresh weights for ``modules`` with the model's own initialisation scheme, seeded.

    transformers marks loaded tensors ``_is_hf_initialized`` and its init functions skip them; the marks are
    cleared first so that a head loaded from the checkpoint really is replaced.
    """
    import torch  # lazy: torch stays off the CLI's --help path

    torch.manual_seed(seed)
    for module in modules:
        for sub in module.modules():
            sub.__dict__.pop("_is_hf_initialized", None)
            for tensor in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
                tensor.__dict__.pop("_is_hf_initialized", None)
        module.apply(model._init_weights)


def head_modules(model) -> list:
    """The task-specific modules of a ``*ForSequenceClassification`` model: everything outside its body."""
    body = getattr(model, model.base_model_prefix)
    return [module for name, module in model.named_children() if module is not body]


def check_finite(model, where: Path | str) -> None:
    """Raise CheckpointError naming the first parameter holding NaN or inf."""
    import torch  # lazy: torch stays off the CLI's --help path

    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise CheckpointError(f"{where}: parameter '{name}' holds NaN or inf values; the checkpoint is corrupt.")


def _head_matches(checkpoint: Checkpoint, label_names: tuple[str, ...] | None) -> bool:
    config = checkpoint.config
    architectures = config.get("architectures") or []
    if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        return False
    if label_names is None:
        return config.get("problem_type") == "regression" and int(config.get("num_labels", 1)) == 1
    id2label = config.get("id2label") or {}
    source = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]
    return config.get("problem_type") != "regression" and tuple(source) == tuple(label_names)
