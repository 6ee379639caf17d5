"""Merge kernels: pure functions of one tensor name's values across models. No I/O, no model objects.

Every kernel takes the same-shaped tensors of the models being merged (and of their common base where the
method needs one) and returns the merged tensor in float32; callers cast to the output dtype. Shapes:
``base`` (*S), ``tensors`` a sequence of k tensors (*S), ``weights`` k floats.

The semantics follow the papers and, where the methods overlap, mergekit's ``generalized_task_arithmetic``
so that the same configuration gives the same numbers:

* weighted average (model soups): sum_i w_i theta_i / sum_i w_i (``normalize=False`` skips the division);
* task arithmetic (Ilharco et al., 2023): base + lambda * sum_i w_i (theta_i - base); a negative weight
  negates a task, weights (1, -1, 1) on (A, B, C) give the analogy A - B + C;
* TIES (Yadav et al., 2023): trim each task vector to its top ``density`` fraction by magnitude, elect each
  entry's sign as the sign of the (weighted) sum, average only the entries that agree with it (the disjoint
  mean), scale by lambda;
* DARE (Yu et al., 2024): drop each delta entry with probability p and rescale survivors by 1 / (1 - p),
  seeded; composable before task arithmetic or TIES;
* SLERP (two models): spherical interpolation of the flattened tensors, linear when nearly colinear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import MergeError

SLERP_COLINEAR = 0.9995  # |cos| above this: interpolate linearly (as mergekit does)


def require_finite(tensor: torch.Tensor, *, name: str, model: str) -> None:
    """Raise MergeError naming the model and tensor when ``tensor`` holds NaN or inf."""
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise MergeError(f"{model}: tensor '{name}' holds {bad} NaN or inf value(s); refusing to merge it.")


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        raise MergeError("A merge needs at least one tensor.")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise MergeError(f"Tensors to merge have different shapes: {sorted(shapes)}.")
    return torch.stack([t.to(torch.float32) for t in tensors])  # (k, *S)


def _weights(weights: Sequence[float] | None, count: int, like: torch.Tensor) -> torch.Tensor:
    """(k, 1, ..., 1) float32 weights broadcastable against a (k, *S) stack; default all ones."""
    values = [1.0] * count if weights is None else list(weights)
    if len(values) != count:
        raise MergeError(f"{len(values)} weights for {count} tensors.")
    return torch.tensor(values, dtype=torch.float32).reshape(count, *([1] * (like.dim() - 1)))


def weighted_average(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
                     *, normalize: bool = True) -> torch.Tensor:
    """sum_i w_i t_i, divided by sum_i w_i when ``normalize`` (the default: a proper average)."""
    stack = _stack(tensors)
    w = _weights(weights, len(tensors), stack)
    total = (w * stack).sum(0)
    if normalize:
        norm = float(w.sum())
        if norm == 0:
            raise MergeError("Weights sum to zero; cannot normalise.")
        total = total / norm
    return total


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest |delta| (k = int(density * n)), zero the rest."""
    if not 0 <= density <= 1:
        raise MergeError(f"density must be in [0, 1], got {density}.")
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    keep = int(density * flat.numel())
    if keep == 0:
        return torch.zeros_like(delta)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.abs().topk(keep, sorted=False).indices] = True
    return (flat * mask).reshape(delta.shape)


def dare(delta: torch.Tensor, drop: float, generator: torch.Generator) -> torch.Tensor:
    """Drop each entry with probability ``drop``, rescale the survivors by 1 / (1 - drop): unbiased."""
    if not 0 <= drop < 1:
        raise MergeError(f"DARE drop probability must be in [0, 1), got {drop}.")
    if drop == 0:
        return delta
    keep = torch.rand(delta.shape, generator=generator) >= drop
    return delta * keep / (1 - drop)


def disjoint_merge(weighted_deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TIES' elect + disjoint mean over a (k, *S) stack of weighted deltas with (k, 1...) weights.

    The elected sign is the sign of the sum; entries that disagree with it are left out, and the rest are
    divided by the total weight of the models that agree (1 where none does).
    """
    elected = weighted_deltas.sum(0).sign()  # (*S)
    agree = weighted_deltas.sign() == elected  # (k, *S)
    mixed = (weighted_deltas * agree).sum(0)
    divisor = (weights * agree).sum(0)
    divisor[divisor == 0] = 1
    return mixed / divisor


def generalized_task_arithmetic(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    *,
    density: float = 1.0,
    sparsify: str | None = None,
    consensus: bool = False,
    normalize: bool = False,
    lam: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """base + lam * combine_i(w_i * sparsify(theta_i - base)): task arithmetic, TIES and DARE in one kernel.

    ``sparsify``: None, ``"magnitude"`` (TIES' trim) or ``"dare"`` (drop 1 - density, rescale);
    ``consensus``: TIES' sign election and disjoint mean; otherwise the weighted deltas are summed, and
    divided by the sum of weights when ``normalize``.
    """
    base32 = base.to(torch.float32)
    stack = _stack(tensors)
    if stack.shape[1:] != base32.shape:
        raise MergeError(f"Base shape {tuple(base32.shape)} differs from the models' {tuple(stack.shape[1:])}.")
    deltas = stack - base32
    if sparsify == "magnitude":
        deltas = torch.stack([magnitude_trim(d, density) for d in deltas])
    elif sparsify == "dare":
        if generator is None:
            raise MergeError("DARE needs a seeded torch.Generator.")
        deltas = torch.stack([dare(d, 1 - density, generator) for d in deltas])
    elif sparsify is not None:
        raise MergeError(f"Unknown sparsification '{sparsify}'; use magnitude or dare.")
    w = _weights(weights, len(tensors), stack)
    weighted = deltas * w
    if consensus:
        mixed = disjoint_merge(weighted, w)
    else:
        mixed = weighted.sum(0)
        if normalize:
            mixed = mixed / float(w.sum())
    return base32 + lam * mixed


def task_arithmetic(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
                    *, lam: float = 1.0) -> torch.Tensor:
    """base + lam * sum_i w_i (theta_i - base)."""
    return generalized_task_arithmetic(base, tensors, weights, lam=lam)


def ties(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None, *,
         density: float = 0.2, lam: float = 1.0) -> torch.Tensor:
    """TIES-merging: trim to the top ``density`` by magnitude, elect signs, disjoint mean, scale by lam."""
    return generalized_task_arithmetic(base, tensors, weights, density=density, sparsify="magnitude",
                                       consensus=True, lam=lam)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) of the flattened tensors; the angle is measured
    between their normalised copies, and nearly colinear pairs are interpolated linearly."""
    if a.shape != b.shape:
        raise MergeError(f"SLERP needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a32, b32 = a.to(torch.float32), b.to(torch.float32)
    na, nb = a32.norm(), b32.norm()
    if na == 0 or nb == 0:
        return (1 - t) * a32 + t * b32
    dot = float((a32 / na * b32 / nb).sum().clamp(-1, 1))
    if abs(dot) > SLERP_COLINEAR:
        return (1 - t) * a32 + t * b32
    theta = torch.acos(torch.tensor(dot, dtype=torch.float64))
    sin_theta = torch.sin(theta)
    s0 = float(torch.sin((1 - t) * theta) / sin_theta)
    s1 = float(torch.sin(t * theta) / sin_theta)
    return s0 * a32 + s1 * b32
