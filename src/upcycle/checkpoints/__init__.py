"""Checkpoints: resolving and fingerprinting model folders, reading safetensors headers, screening weights
for NaN and inf, the one loading door to transformers, and atomic saving. Streaming tensor IO
(:mod:`upcycle.checkpoints.streaming`) needs torch and is
imported on its own.
"""

from .headers import FLOATING_DTYPES, TensorEntry, read_safetensors_header, tensor_index
from .loading import (
    check_finite,
    head_modules,
    load_for_classification,
    load_language_model,
    load_tokenizer,
    quiet_transformers,
    reinitialize,
)
from .resolve import (
    DEFAULT_BASE,
    PROVENANCE_FILE,
    ArchKey,
    Checkpoint,
    CheckpointRef,
    describe,
    resolve_checkpoint,
)
from .saving import atomic_directory, save_checkpoint
from .screening import first_nonfinite_tensor, require_finite_weights

__all__ = [
    "DEFAULT_BASE", "FLOATING_DTYPES", "PROVENANCE_FILE", "ArchKey", "Checkpoint", "CheckpointRef", "TensorEntry",
    "atomic_directory", "check_finite", "describe", "first_nonfinite_tensor", "head_modules",
    "load_for_classification", "load_language_model", "load_tokenizer", "quiet_transformers", "read_safetensors_header",
    "reinitialize", "require_finite_weights", "resolve_checkpoint", "save_checkpoint", "tensor_index",
]
