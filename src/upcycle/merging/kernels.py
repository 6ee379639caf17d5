"""Merge kernels: pure functions of one tensor name's values across models. No I/O, no model objects.

Every kernel takes the same-shaped tensors of the models being merged (and of their common base where the
method needs one) and returns the merged tensor in float32; callers cast to the output dtype. Shapes:
``base`` (*S), ``tensors`` a sequence of k tensors (*S), ``weights`` k floats.

The semantics follow the papers and, where the methods overlap, mergekit's ``generalized_task_arithmetic``
so that the same configuration gives the same numbers:

* weighted average (model soups): sum_i w_i theta_i / sum_i w_i (``normalize=False`` skips the division);
* task arithmetic (Ilharco et al., 2023): base + lambda * sum_i w_i (theta_i - base); a negative weight
  negates a task, weights (1, -1, 1) on (A, B, C) give the analogy A - B + C;
* TIES (Yadav et al., 2023): trim each task vector to its top ``density`` fraction by magnitude (per tensor,
  or at a cut computed over the whole model and passed in as ``thresholds``), elect each entry's sign as the sign
  of the (weighted) sum, average only the entries that agree with it (the disjoint
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
    """Raise MergeError naming the model and tensor when ``tensor`` holds NaN or inf.

    One float64 sum first: any NaN or inf makes it non-finite, and float32 values cannot overflow it, so the
    element-wise check (which allocates a mask) only runs when something is wrong.
    """
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum(dtype=torch.float64))):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    raise MergeError(f"{model}: tensor '{name}' holds {bad} NaN or inf value(s); refusing to merge it.")


def _check_shapes(tensors: Sequence[torch.Tensor]) -> None:
    if not tensors:
        raise MergeError("A merge needs at least one tensor.")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise MergeError(f"Tensors to merge have different shapes: {sorted(shapes)}.")


def _weight_list(weights: Sequence[float] | None, count: int) -> list[float]:
    values = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(values) != count:
        raise MergeError(f"{len(values)} weights for {count} tensors.")
    return values


def _per_model(value: float | Sequence[float], count: int, what: str) -> list[float]:
    values = [float(value)] * count if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != count:
        raise MergeError(f"{len(values)} {what} values for {count} tensors.")
    return values


def weighted_average(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
                     *, normalize: bool = True) -> torch.Tensor:
    """sum_i w_i t_i, divided by sum_i w_i when ``normalize`` (the default: a proper average).

    Accumulates in one float32 buffer (no (k, *S) stack), so the memory is one tensor's whatever k is.
    """
    _check_shapes(tensors)
    values = _weight_list(weights, len(tensors))
    total = torch.mul(tensors[0].to(torch.float32), values[0])
    for tensor, weight in zip(tensors[1:], values[1:], strict=True):
        total.add_(tensor.to(torch.float32), alpha=weight)
    if normalize:
        norm = sum(values)
        if norm == 0:
            raise MergeError("Weights sum to zero; cannot normalise.")
        total /= norm
    return total


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the entries whose |delta| is at least the k-th largest, k = max(1, int(density * n)); zero the rest.

    As in the TIES reference code (a ``kthvalue`` threshold and ``>=``), entries tied with the threshold are
    all kept, so a tie can keep a few more than k. mergekit keeps exactly k, choosing among tied entries by
    the order of its sort; the two agree everywhere else. Density 0 zeroes everything.
    """
    if not 0 <= density <= 1:
        raise MergeError(f"density must be in [0, 1], got {density}.")
    if density >= 1:
        return delta
    if density == 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    magnitude = delta.abs().reshape(-1)
    keep = max(1, int(density * magnitude.numel()))
    threshold = magnitude.kthvalue(magnitude.numel() - keep + 1).values  # the keep-th largest magnitude
    return trim_below(delta, threshold)


def trim_below(delta: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Zero the entries whose |delta| is below ``threshold`` (a given one, e.g. over the whole model)."""
    return delta * (delta.abs() >= threshold)


def dare(delta: torch.Tensor, drop: float, generator: torch.Generator) -> torch.Tensor:
    """Drop each entry with probability ``drop``, rescale the survivors by 1 / (1 - drop): unbiased."""
    if not 0 <= drop < 1:
        raise MergeError(f"DARE drop probability must be in [0, 1), got {drop}.")
    if drop == 0:
        return delta
    keep = torch.rand(delta.shape, generator=generator) >= drop
    return delta * keep / (1 - drop)


def disjoint_merge(weighted_deltas: torch.Tensor, weights: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """TIES' elect + disjoint merge over a (k, *S) stack of weighted deltas with (k, 1...) weights.

    The elected sign is the sign of the sum (+ where the sum is 0, as in mergekit); entries that disagree
    with it (zeros included) are left out. With ``normalize`` the rest are divided by the total weight of the
    models that agree (1 where none does): the disjoint mean. Without it they are summed.
    """
    elected = torch.where(weighted_deltas.sum(0) >= 0, 1.0, -1.0)  # (*S)
    agree = weighted_deltas.sign() == elected  # (k, *S)
    mixed = (weighted_deltas * agree).sum(0)
    if not normalize:
        return mixed
    divisor = (weights * agree).sum(0)
    divisor[divisor == 0] = 1
    return mixed / divisor


def generalized_task_arithmetic(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    *,
    density: float | Sequence[float] = 1.0,
    sparsify: str | None = None,
    consensus: bool = False,
    normalize: bool = False,
    lam: float = 1.0,
    generator: torch.Generator | None = None,
    thresholds: Sequence[float] | None = None,
) -> torch.Tensor:
    """base + lam * combine_i(w_i * sparsify(theta_i - base)): task arithmetic, TIES and DARE in one kernel.

    ``density``: one value or one per model; ``sparsify``: None, ``"magnitude"`` (TIES' trim) or ``"dare"``
    (drop 1 - density, rescale); ``consensus``: TIES' sign election, keeping only the entries that agree;
    ``normalize``: divide by the summed weight (of the agreeing models, under consensus: the disjoint mean).
    ``thresholds``: one magnitude per model that replaces the per-tensor trim (``sparsify="magnitude"``) with
    a given cut, such as the model-wide one of :mod:`upcycle.merging.threshold`.
    Without consensus the deltas are accumulated one at a time; with it they are stacked (k, *S).
    """
    _check_shapes(tensors)
    base32 = base.to(torch.float32)
    if tuple(tensors[0].shape) != tuple(base32.shape):
        raise MergeError(f"Base shape {tuple(base32.shape)} differs from the models' {tuple(tensors[0].shape)}.")
    if sparsify not in (None, "magnitude", "dare"):
        raise MergeError(f"Unknown sparsification '{sparsify}'; use magnitude or dare.")
    if sparsify == "dare" and generator is None:
        raise MergeError("DARE needs a seeded torch.Generator.")
    values = _weight_list(weights, len(tensors))
    densities = _per_model(density, len(tensors), "density")
    if sparsify is None and not consensus:
        # plain task arithmetic is linear: base + s * sum_i w_i (t_i - base) = (1 - s sum_i w_i) base + sum_i s w_i t_i,
        # one pass per model and no delta buffers (equal up to float rounding)
        scale = lam / sum(values) if normalize and abs(sum(values)) > 1e-8 else lam
        merged = torch.mul(base32, 1 - scale * sum(values))
        for tensor, weight in zip(tensors, values, strict=True):
            merged.add_(tensor.to(torch.float32), alpha=scale * weight)
        return merged

    def weighted_delta(i: int) -> torch.Tensor:
        delta = tensors[i].to(torch.float32) - base32
        if sparsify == "magnitude":
            delta = trim_below(delta, thresholds[i]) if thresholds else magnitude_trim(delta, densities[i])
        elif sparsify == "dare":
            delta = dare(delta, 1 - densities[i], generator)
        return delta.mul_(values[i])

    if consensus:
        w = torch.tensor(values, dtype=torch.float32).reshape(len(values), *([1] * base32.dim()))
        mixed = disjoint_merge(torch.stack([weighted_delta(i) for i in range(len(tensors))]), w, normalize)
    else:
        mixed = weighted_delta(0)
        for i in range(1, len(tensors)):
            mixed += weighted_delta(i)
        if normalize and abs(sum(values)) > 1e-8:  # mergekit leaves a zero-sum mix undivided
            mixed /= sum(values)
    return base32 + lam * mixed


def task_arithmetic(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
                    *, lam: float = 1.0) -> torch.Tensor:
    """base + lam * sum_i w_i (theta_i - base)."""
    return generalized_task_arithmetic(base, tensors, weights, lam=lam)


def ties(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None, *,
         density: float = 0.2, lam: float = 1.0) -> torch.Tensor:
    """TIES-merging: trim to the top ``density`` by magnitude, elect signs, disjoint mean, scale by lam."""
    return generalized_task_arithmetic(base, tensors, weights, density=density, sparsify="magnitude",
                                       consensus=True, normalize=True, lam=lam)


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
