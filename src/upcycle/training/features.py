"""Frozen features and linear probes: what a checkpoint knows about a task without finetuning it.

``embed`` runs the checkpoint's encoder once over a split (length-sorted batches, bf16 autocast where the CPU
has it) and mean-pools the last hidden states; ``linear_probe_score`` cross-validates a logistic regression
on those features. A probe costs one forward pass, a small fraction of a finetune.
"""

from __future__ import annotations

import numpy as np

from ..checkpoints import Checkpoint, load_tokenizer, quiet_transformers
from ..errors import TaskError
from ..tasks import Split
from .batching import collate, encode, eval_batches


def embed(
    checkpoint: Checkpoint, split: Split, *, max_length: int = 128, batch_size: int = 128, precision: str = "bf16"
) -> np.ndarray:
    """Mean-pooled last hidden states (over real tokens): (n, hidden) float32, in the split's order."""
    import torch  # lazy: torch stays off the CLI's --help path
    from transformers import AutoModel  # lazy: transformers is slow to import

    tokenizer = load_tokenizer(checkpoint)
    encoded = encode(tokenizer, split, max_length, regression=True)  # labels are not used here
    with quiet_transformers():
        model = AutoModel.from_pretrained(checkpoint.path, trust_remote_code=False).eval()
    pad_id = tokenizer.pad_token_id or 0
    features = np.empty((len(split), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for indices in eval_batches(encoded.lengths, batch_size):
            batch = collate(encoded, indices, pad_id)
            batch.pop("labels")
            hidden = model(**batch).last_hidden_state.float()  # (b, length, hidden)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (b, length, 1)
            features[indices] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return features


def linear_probe_score(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Mean cross-validated accuracy of a standardised logistic regression; features (n, d), labels (n,)."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn is slow to import
    from sklearn.model_selection import StratifiedKFold, cross_val_score  # lazy: scikit-learn is slow to import
    from sklearn.pipeline import make_pipeline  # lazy: scikit-learn is slow to import
    from sklearn.preprocessing import StandardScaler  # lazy: scikit-learn is slow to import

    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        raise TaskError("A linear probe needs at least two classes.")
    splits = min(folds, int(counts.min()))
    if splits < 2:
        raise TaskError("A linear probe needs at least two examples of every class.")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, features, labels, cv=cv).mean())
