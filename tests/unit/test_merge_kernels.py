"""Merge kernels on random tensors: the properties the papers promise, and values computed by hand."""

from __future__ import annotations

import pytest
import torch

from upcycle.errors import MergeError
from upcycle.merging import (
    dare,
    generalized_task_arithmetic,
    magnitude_trim,
    require_finite,
    slerp,
    task_arithmetic,
    ties,
    weighted_average,
)
from upcycle.merging.kernels import trim_below
from upcycle.merging.threshold import kth_largest_magnitude


@pytest.fixture
def models():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return base, [base + 0.1 * torch.randn(6, 5, generator=g) for _ in range(3)]


def test_lambda_zero_gives_the_base_and_one_model_gives_itself(models):
    base, tensors = models
    assert torch.equal(task_arithmetic(base, tensors, lam=0.0), base)
    assert torch.equal(ties(base, tensors, density=0.5, lam=0.0), base)
    assert torch.allclose(weighted_average(tensors[:1], [1.0]), tensors[0])
    assert torch.allclose(task_arithmetic(base, tensors[:1], [1.0]), tensors[0], atol=1e-6)
    assert torch.allclose(ties(base, tensors[:1], density=1.0), tensors[0], atol=1e-6)


def test_negation_undoes_addition_and_analogies(models):
    base, (a, b, c) = models
    added = task_arithmetic(base, [a], [1.0])  # base + (a - base)
    assert torch.allclose(task_arithmetic(added, [a + (a - base)], [-1.0]), base, atol=1e-6)  # minus the same delta
    undone = task_arithmetic(base, [a, a], [1.0, -1.0])
    assert torch.allclose(undone, base, atol=1e-6)
    assert torch.allclose(task_arithmetic(base, [a, b, c], [1.0, -1.0, 1.0]), a - b + c, atol=1e-6)


def test_weighted_average_by_hand():
    x, y = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    assert torch.allclose(weighted_average([x, y], [1.0, 3.0]), torch.tensor([2.5, 5.0]))
    assert torch.allclose(weighted_average([x, y], [1.0, 3.0], normalize=False), torch.tensor([10.0, 20.0]))
    with pytest.raises(MergeError, match="sum to zero"):
        weighted_average([x, y], [1.0, -1.0])
    with pytest.raises(MergeError, match="different shapes"):
        weighted_average([x, torch.zeros(3)])


def test_ties_by_hand():
    base = torch.zeros(4)
    a = torch.tensor([3.0, -1.0, 0.5, 2.0])
    b = torch.tensor([-1.0, -2.0, 4.0, 0.1])
    # density 0.5 keeps 2 of 4 entries: a -> [3, 0, 0, 2], b -> [0, -2, 4, 0]
    # elected signs: [+, -, +, +]; disjoint means: [3, -2, 4, 2]
    assert torch.allclose(ties(base, [a, b], density=0.5), torch.tensor([3.0, -2.0, 4.0, 2.0]))
    # density 1: signs of the sums [+, -, +, +]; entry 0 keeps only a (3), entry 1 averages -1, -2
    assert torch.allclose(ties(base, [a, b], density=1.0), torch.tensor([3.0, -1.5, 2.25, 1.05]))
    assert torch.allclose(ties(base, [a, b], density=1.0, lam=2.0), 2 * torch.tensor([3.0, -1.5, 2.25, 1.05]))


def test_ties_with_density_one_equals_its_disjoint_mean_definition(models):
    base, tensors = models
    merged = ties(base, tensors, density=1.0)
    deltas = [t - base for t in tensors]
    expected = torch.empty_like(base)
    for index in range(base.numel()):
        values = [float(d.reshape(-1)[index]) for d in deltas]
        sign = 1.0 if sum(values) > 0 else -1.0 if sum(values) < 0 else 0.0
        agreeing = [v for v in values if (v > 0) - (v < 0) == sign]
        expected.reshape(-1)[index] = sum(agreeing) / len(agreeing) if agreeing else 0.0
    assert torch.allclose(merged, base + expected, atol=1e-6)


def test_magnitude_trim_keeps_the_largest_entries():
    delta = torch.tensor([[0.1, -5.0], [2.0, -0.3]])
    assert torch.equal(magnitude_trim(delta, 0.5), torch.tensor([[0.0, -5.0], [2.0, 0.0]]))
    assert torch.equal(magnitude_trim(delta, 0.0), torch.zeros_like(delta))
    # entries tied with the threshold are all kept (the TIES reference code's kthvalue and >=)
    tied = torch.tensor([3.0, -1.0, 1.0, 0.5])
    assert torch.equal(magnitude_trim(tied, 0.5), torch.tensor([3.0, -1.0, 1.0, 0.0]))
    assert torch.equal(magnitude_trim(tied, 0.1), torch.tensor([3.0, 0.0, 0.0, 0.0]))  # at least one kept
    with pytest.raises(MergeError, match="density"):
        magnitude_trim(delta, 1.5)


@pytest.mark.parametrize("seed", range(4))
def test_model_wide_threshold_equals_kthvalue_over_the_concatenation(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 3), (50,), (4, 4, 4), (1,)]
    chunks = [torch.randn(shape, generator=g) * 10 ** (i - 2) for i, shape in enumerate(shapes)]
    chunks[1][:20] = chunks[0][0, 0]  # ties across tensors
    chunks[2][0] = 0.0
    flat = torch.cat([c.reshape(-1) for c in chunks]).abs()
    for k in (1, 2, 20, 21, 60, flat.numel()):
        expected = flat.kthvalue(flat.numel() - k + 1).values.item()
        assert kth_largest_magnitude(lambda: iter(chunks), k) == expected
    with pytest.raises(ValueError, match="exceeds"):
        kth_largest_magnitude(lambda: iter(chunks), flat.numel() + 1)


def test_given_thresholds_replace_the_per_tensor_trim(models):
    base, tensors = models
    cut = [0.05, 0.0, float("inf")]
    expected_deltas = [(t - base) * ((t - base).abs() >= c) for t, c in zip(tensors, cut)]
    merged = generalized_task_arithmetic(base, tensors, density=0.3, sparsify="magnitude", thresholds=cut)
    assert torch.allclose(merged, base + sum(expected_deltas))
    assert torch.equal(trim_below(torch.tensor([0.1, -0.2, 0.3]), 0.2), torch.tensor([0.0, -0.2, 0.3]))


def test_dare_is_unbiased_and_seeded():
    delta = torch.linspace(-1, 1, 1000)
    g = torch.Generator().manual_seed(1)
    draws = 2000
    mean = torch.stack([dare(delta, 0.7, g) for _ in range(draws)]).mean(0)
    standard_error = delta.abs() * (0.7 / 0.3 / draws) ** 0.5  # per entry: Var = delta^2 p / (1 - p) / draws
    assert bool(((mean - delta).abs() <= 5 * standard_error + 1e-6).all())
    assert abs(float((mean - delta).mean())) < 0.005  # no bias overall
    first = dare(delta, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(first, dare(delta, 0.5, torch.Generator().manual_seed(3)))
    assert set(torch.unique(first / delta.where(delta != 0, torch.ones(1))).round(decimals=4).tolist()) <= {0.0, 2.0}
    with pytest.raises(MergeError, match="drop probability"):
        dare(delta, 1.0, g)


def test_dare_composes_before_task_arithmetic_and_ties(models):
    base, tensors = models
    for consensus in (False, True):
        merged = generalized_task_arithmetic(base, tensors, density=0.6, sparsify="dare", consensus=consensus,
                                             generator=torch.Generator().manual_seed(0))
        again = generalized_task_arithmetic(base, tensors, density=0.6, sparsify="dare", consensus=consensus,
                                            generator=torch.Generator().manual_seed(0))
        assert torch.equal(merged, again) and not torch.allclose(merged, base)
    with pytest.raises(MergeError, match="seeded"):
        generalized_task_arithmetic(base, tensors, sparsify="dare", density=0.5)


def test_slerp_endpoints_orthogonal_value_and_colinear_fallback():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    half = 2 ** -0.5
    assert torch.allclose(slerp(a, b, 0.5), torch.tensor([half, half]))  # on the unit circle, not the chord
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)  # colinear: linear
    with pytest.raises(MergeError, match="equal shapes"):
        slerp(a, torch.zeros(3), 0.5)


def test_non_finite_inputs_are_named():
    require_finite(torch.ones(3), name="w", model="m")
    with pytest.raises(MergeError, match=r"expert-a: tensor 'encoder.layer.0.weight' holds 2 NaN or inf"):
        require_finite(torch.tensor([1.0, float("nan"), float("inf")]), name="encoder.layer.0.weight",
                       model="expert-a")
