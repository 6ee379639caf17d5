"""Tokenised splits and the batches a finetune iterates over: dynamic padding and length grouping.

Padding every batch only to its own longest example, and putting examples of similar length in the same
batch, removes most of the padding a fixed-length or randomly batched loop computes on; on a CPU the work
of a transformer layer is proportional to the padded length, so this is most of the engine's speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..tasks import Split


@dataclass(frozen=True)
class Encoded:
    """A tokenised split.

    Attributes:
        features: ``{"input_ids": [n arrays of shape (length_i,)], "token_type_ids": [...]}`` (no padding).
        labels: (n,) int64 class indices or float32 targets.
        lengths: (n,) token counts.
    """

    features: dict[str, list[np.ndarray]]
    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer, split: Split, max_length: int, regression: bool) -> Encoded:
    """Tokenise a split once, truncating to ``max_length`` tokens, without padding."""
    encoded = tokenizer(
        list(split.texts),
        list(split.text_pairs) if split.text_pairs is not None else None,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
    )
    features = {
        name: [np.asarray(row, dtype=np.int64) for row in values]
        for name, values in encoded.items()
        if name in ("input_ids", "token_type_ids")
    }
    lengths = np.fromiter((len(row) for row in features["input_ids"]), dtype=np.int64, count=len(split))
    labels = np.asarray(split.labels, dtype=np.float32 if regression else np.int64)
    return Encoded(features, labels, lengths)


def collate(encoded: Encoded, indices: np.ndarray, pad_token_id: int) -> dict[str, torch.Tensor]:  # noqa: F821
    """Pad the examples at ``indices`` to their longest length.

    Returns ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them), each
    of shape (batch, max_length_in_batch), and ``labels`` of shape (batch,).
    """
    import torch  # lazy: torch stays off the CLI's --help path

    width = int(encoded.lengths[indices].max())
    batch: dict[str, torch.Tensor] = {}
    for name, rows in encoded.features.items():
        fill = pad_token_id if name == "input_ids" else 0
        array = np.full((len(indices), width), fill, dtype=np.int64)
        for row, index in enumerate(indices):
            values = rows[index]
            array[row, : len(values)] = values
        batch[name] = torch.from_numpy(array)
    mask = np.arange(width)[None, :] < encoded.lengths[indices][:, None]
    batch["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
    batch["labels"] = torch.from_numpy(encoded.labels[indices])
    return batch


def train_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group_by_length: bool
) -> list[np.ndarray]:
    """One epoch of training batches (index arrays).

    Without grouping: a random permutation cut into batches. With grouping: the permutation is cut into
    megabatches, each sorted by length and cut into batches, and the batch order is shuffled, so batches are
    homogeneous in length yet random in content and order. A megabatch holds ``min(50, n // (4 * batch_size))``
    batches (at least one), the rule of transformers' ``LengthGroupedSampler``: small datasets keep several
    megabatches, so batch composition still changes from epoch to epoch.
    """
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    span = max(1, min(50, len(lengths) // (4 * batch_size))) * batch_size
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches(indices: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Split one batch into chunks of at most ``max_tokens`` padded tokens (at least one example each).

    Memory then stays bounded for large batches of long texts (the paper protocol's 256 x 256 tokens);
    accumulating the chunks' gradients gives the gradient of the whole batch.
    """
    width = int(lengths[indices].max())
    step = max(1, max_tokens // width)
    return [indices[i : i + step] for i in range(0, len(indices), step)]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches over all examples sorted by length (longest first), so almost nothing is padded."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def to_device(batch: dict, device: str) -> dict:
    """The batch's tensors on ``device``: unchanged on the CPU; on CUDA pinned and copied without blocking."""
    if device == "cpu":
        return batch
    if device.startswith("cuda"):
        return {name: tensor.pin_memory().to(device, non_blocking=True) for name, tensor in batch.items()}
    return {name: tensor.to(device) for name, tensor in batch.items()}


def inference_batches(encoded: Encoded, pad_id: int, batch_size: int, device: str) -> Iterator[tuple[np.ndarray, dict]]:
    """Length-sorted batches for a forward pass: ``(indices, inputs)`` with the labels left out, on ``device``."""
    for indices in eval_batches(encoded.lengths, batch_size):
        batch = collate(encoded, indices, pad_id)
        batch.pop("labels")
        yield indices, to_device(batch, device)
