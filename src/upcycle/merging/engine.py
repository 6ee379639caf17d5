"""The merge engine: pre-flight, then one tensor at a time from memory-mapped inputs to streamed shards.

Peak memory is a few tensors (the largest one times the number of models, in float32), never a state dict:
inputs are memory-mapped and their pages released after each tensor, and the output is written as it is
produced. The output folder appears atomically, with the base's tokenizer, a ``config.json``, the exact
``merge_config.yaml``, ``upcycle.json`` provenance and a model card; a failure (NaN in an input, a full
disk, an interrupt) leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoints import (
    PROVENANCE_FILE,
    Checkpoint,
    atomic_directory,
    resolve_checkpoint,
)
from ..checkpoints.streaming import MappedCheckpoint, StreamingWriter
from ..errors import MergeError
from . import kernels
from .card import config_yaml, model_card, provenance
from .config import MergeConfig, TensorPlan, load_config
from .methods import METHODS
from .plan import TOKENIZER_FILES, MergePlan, ModelInfo, PlannedTensor, plan_merge, trimmed_tensors
from .threshold import kth_largest_magnitude

DEFAULT_SHARD_BYTES = 2 * 1024**3
Progress = Callable[[int, int], None]


def combine(plan: TensorPlan, base: torch.Tensor | None, tensors: list[torch.Tensor],
            generator: torch.Generator | None = None, thresholds: list[float] | None = None) -> torch.Tensor:
    """Apply one tensor's resolved method to the inputs' values (float32 result).

    Shapes: ``base`` (*S) or None, ``tensors`` k x (*S) in the order of the config's merged models.
    ``thresholds``: per-model magnitude cuts computed over the whole model (TIES with ``trim_scope: model``).
    """
    method = METHODS.get(plan.method)
    if method.kernel == "average":
        return kernels.weighted_average(tensors, plan.weights, normalize=plan.normalize)
    if base is None:
        raise MergeError(f"{method.name} needs the base's value of every tensor.")
    if method.kernel == "slerp":
        return kernels.slerp(base, tensors[0], plan.t)
    return kernels.generalized_task_arithmetic(
        base, tensors, plan.weights, density=plan.densities, sparsify=method.sparsify,
        consensus=method.consensus, normalize=plan.normalize, lam=plan.lam, generator=generator,
        thresholds=thresholds)


def model_thresholds(plan: MergePlan, inputs: list[MappedCheckpoint], base: MappedCheckpoint) -> list[float]:
    """Per merged model, the magnitude at which ``trim_scope: model`` cuts its task vector: the exact k-th
    largest |theta_i - base| over all trimmed tensors, k = max(1, int(density * n)). Two streaming passes."""
    tensors = trimmed_tensors(plan)
    if not tensors:
        return []
    count = sum(t.output.numel for t in tensors)
    cuts = []
    for i, (model, mapped) in enumerate(zip(plan.inputs, inputs, strict=True)):
        density = tensors[0].parameters.densities[i]
        if density >= 1:
            cuts.append(0.0)
            continue
        if density <= 0:
            cuts.append(math.inf)
            continue

        def deltas(i: int = i, model: ModelInfo = model, mapped: MappedCheckpoint = mapped) -> Iterator[torch.Tensor]:
            for item in tensors:
                value, base_value = mapped.get(item.sources[i]), base.get(item.base_source)
                kernels.require_finite(value, name=item.sources[i], model=model.reference)
                kernels.require_finite(base_value, name=item.base_source, model=plan.base.reference)
                yield value.to(torch.float32) - base_value.to(torch.float32)
                mapped.release(item.sources[i])
                base.release(item.base_source)

        cuts.append(kth_largest_magnitude(deltas, max(1, int(density * count))))
    return cuts


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed, so DARE's masks do not depend on the order tensors are merged in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def merge(config: MergeConfig | str | Path | dict[str, Any], out: str | Path, *, overwrite: bool = False,
          max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: Progress | None = None) -> Checkpoint:
    """Merge the configured models into the folder ``out`` and return it as a :class:`Checkpoint`.

    ``config`` is a :class:`MergeConfig`, a YAML path or a dict in the same schema. Raises ConfigError,
    CheckpointError or MergeError with the reason; on any failure ``out`` is left as it was.
    """
    plan = plan_merge(config if isinstance(config, MergeConfig) else load_config(config))
    return execute(plan, out, overwrite=overwrite, max_shard_bytes=max_shard_bytes, progress=progress)


def execute(plan: MergePlan, out: str | Path, *, overwrite: bool = False,
            max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: Progress | None = None) -> Checkpoint:
    """Run a pre-flighted plan (see :func:`merge`)."""
    out = Path(out)
    with ThreadPoolExecutor(max_workers=1) as pool, atomic_directory(out, overwrite=overwrite) as staging:
        # input fingerprints for the provenance are hashed beside the merge (hashlib releases the GIL)
        hashing = pool.submit(lambda: {m.reference: m.checkpoint.fingerprint for m in plan.models})
        _write_weights(plan, staging, max_shard_bytes, progress)
        record = provenance(plan, hashing.result(), __version__)
        (staging / "config.json").write_text(json.dumps(plan.output_config, indent=2, sort_keys=True) + "\n")
        for name in TOKENIZER_FILES:
            source = plan.tokenizer_source.checkpoint.path / name
            if source.exists():
                shutil.copyfile(source, staging / name)
        generation = plan.reference.checkpoint.path / "generation_config.json"
        if generation.exists():
            shutil.copyfile(generation, staging / generation.name)
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (staging / "merge_config.yaml").write_text(config_yaml(plan))
        (staging / "README.md").write_text(model_card(plan, record, out.name))
    return resolve_checkpoint(out)


def _write_weights(plan: MergePlan, folder: Path, max_shard_bytes: int, progress: Progress | None) -> None:
    with ExitStack() as stack:
        maps = {id(m): stack.enter_context(MappedCheckpoint(m.entries)) for m in plan.models}
        inputs = [maps[id(m)] for m in plan.inputs]
        base = maps[id(plan.base)] if plan.base else None
        reference = maps[id(plan.reference)]
        thresholds = model_thresholds(plan, inputs, base) if plan.config.trim_scope == "model" else None
        writer = StreamingWriter(folder, [t.output for t in plan.tensors], max_shard_bytes,
                                 {"upcycle_merge_method": plan.config.merge_method})
        for done, item in enumerate(plan.tensors, 1):
            if item.action == "copy":
                stored = plan.reference.body[item.canonical]
                writer.write(item.output.name, reference.get(stored).clone())
                reference.release(stored)
            else:
                writer.write(item.output.name, _merged(plan, item, inputs, base, thresholds))
                for mapped, name in zip(inputs, item.sources, strict=True):
                    mapped.release(name)
                if base is not None and item.base_source is not None:
                    base.release(item.base_source)
            if progress:
                progress(done, len(plan.tensors))
        writer.close()


def _merged(plan: MergePlan, item: PlannedTensor, inputs: list[MappedCheckpoint],
            base: MappedCheckpoint | None, thresholds: list[float] | None) -> torch.Tensor:
    values = []
    for model, mapped, name in zip(plan.inputs, inputs, item.sources, strict=True):
        value = mapped.get(name)
        kernels.require_finite(value, name=name, model=model.reference)
        values.append(value)
    base_value = None
    if base is not None and item.base_source is not None:
        base_value = base.get(item.base_source)
        kernels.require_finite(base_value, name=item.base_source, model=plan.base.reference)
    if item.action == "average":
        merged = kernels.weighted_average(values, item.parameters.weights)
    else:
        generator = None
        if plan.config.merge_method.startswith("dare"):
            generator = torch.Generator().manual_seed(tensor_seed(plan.config.seed, item.output.name))
        merged = combine(item.parameters, base_value, values, generator, thresholds)
    return merged.to(item.output.dtype)
