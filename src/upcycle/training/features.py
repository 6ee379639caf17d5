"""Frozen features and linear probes: what a checkpoint knows about a task without finetuning it.

``embed`` runs the checkpoint's encoder once over a split (length-sorted batches, bf16 autocast where the CPU
has it) and mean-pools the last hidden states; ``linear_probe_score`` cross-validates a logistic regression
(ridge for regression) on those features. A probe costs one forward pass, a small fraction of a finetune.
``nearest_votes`` is the nearest-instance vote of Retrieval of Experts, shared by the ``retrieval`` selection
estimator and the expert LMs' router (:mod:`upcycle.scoring.experts`).
"""

from __future__ import annotations

import numpy as np

from ..checkpoints import Checkpoint, load_tokenizer, quiet_transformers
from ..errors import TaskError
from ..tasks import Split
from .batching import encode, inference_batches
from .devices import bf16_autocast, resolve_device

PROBE_FOLDS = 5


def embed(
    checkpoint: Checkpoint, split: Split, *, max_length: int = 128, batch_size: int = 128, precision: str = "bf16",
    device: str | None = None,
) -> np.ndarray:
    """Mean-pooled last hidden states (over real tokens): (n, hidden) float32, in the split's order. ``device``:
    see :func:`~upcycle.training.devices.resolve_device`."""
    import torch  # lazy: torch stays off the CLI's --help path
    from transformers import AutoModel  # lazy: transformers is slow to import

    tokenizer = load_tokenizer(checkpoint)
    encoded = encode(tokenizer, split, max_length, regression=True)  # labels are not used here
    with quiet_transformers():
        model = AutoModel.from_pretrained(checkpoint.path, trust_remote_code=False).eval()
    device = resolve_device(device)
    model = model.to(device)
    pad_id = tokenizer.pad_token_id or 0
    features = np.empty((len(split), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), bf16_autocast(device, precision == "bf16"):
        for indices, inputs in inference_batches(encoded, pad_id, batch_size, device):
            hidden = model(**inputs).last_hidden_state.float()  # (b, length, hidden)
            mask = inputs["attention_mask"].unsqueeze(-1).float()  # (b, length, 1)
            features[indices] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
    return features


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (sentence-embedding convention of all-MiniLM-L6-v2): (n, d) -> (n, d)."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def nearest_votes(sources: list[np.ndarray], queries: np.ndarray) -> np.ndarray:
    """Votes per source (len(sources),): each query row (q, d) votes for the source of its nearest (cosine) row.

    An exact tie between rows of two sources goes to the source listed first (numpy's ``argmax``).
    """
    owners = np.concatenate([np.full(len(s), i) for i, s in enumerate(sources)])
    similarity = normalize(queries) @ normalize(np.concatenate(sources)).T  # (q, total)
    return np.bincount(owners[similarity.argmax(1)], minlength=len(sources)).astype(float)


def mean_best_similarity(sources: list[np.ndarray], queries: np.ndarray) -> np.ndarray:
    """Per source (len(sources),): the mean over the query rows (q, d) of the cosine to that source's nearest row.

    Orders sources that :func:`nearest_votes` gives equal votes (zero, say) by how close they come to the queries.
    """
    unit = normalize(queries)
    return np.array([float((unit @ normalize(source).T).max(axis=1).mean()) for source in sources])


def probe_folds(labels: np.ndarray, regression: bool, folds: int = PROBE_FOLDS) -> int:
    """How many cross-validation folds ``labels`` (n,) support, at most ``folds``; TaskError below two."""
    if regression:
        available = len(labels) // 2
    else:
        _, counts = np.unique(labels, return_counts=True)
        if len(counts) < 2:
            raise TaskError("the sample has a single class; a linear probe needs two classes or more")
        available = int(counts.min())
    if available < 2:
        raise TaskError("too few examples per class for two cross-validation folds")
    return min(folds, available)


def cross_validated_score(model, features: np.ndarray, labels: np.ndarray, *, regression: bool, seed: int,
                          folds: int = PROBE_FOLDS) -> float:
    """Accuracy (classification) or Spearman (regression, 0.0 when undefined) of the out-of-fold predictions of
    ``model`` (a scikit-learn estimator) on ``features`` (n, d) for ``labels`` (n,); folds shuffled by ``seed``,
    stratified for classification."""
    from scipy.stats import spearmanr  # lazy: scipy is slow to import
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict  # lazy: scikit-learn is slow

    splitter = KFold if regression else StratifiedKFold
    cv = splitter(n_splits=probe_folds(labels, regression, folds), shuffle=True, random_state=seed)
    predictions = cross_val_predict(model, features, labels, cv=cv)
    if regression:
        rho = spearmanr(predictions, labels).statistic
        return 0.0 if np.isnan(rho) else float(rho)
    return float((predictions == labels).mean())


def linear_probe_score(features: np.ndarray, labels: np.ndarray, *, regression: bool = False, seed: int = 0,
                       folds: int = PROBE_FOLDS) -> float:
    """The one linear probe on frozen features (n, d): a standardised logistic regression (ridge with its alpha
    chosen by efficient leave-one-out for regression), scored out of fold by :func:`cross_validated_score`.
    Serves the ``probe`` selection estimator and ``upcycle analyze --probe-target``."""
    from sklearn.linear_model import LogisticRegression, RidgeCV  # lazy: scikit-learn is slow to import
    from sklearn.pipeline import make_pipeline  # lazy: scikit-learn is slow to import
    from sklearn.preprocessing import StandardScaler  # lazy: scikit-learn is slow to import

    head = RidgeCV(alphas=np.logspace(-2, 4, 7)) if regression else LogisticRegression(max_iter=2000)
    return cross_validated_score(make_pipeline(StandardScaler(), head), features, labels, regression=regression,
                                 seed=seed, folds=folds)
