"""The merge methods, one registered object each: what a method computes and which parameters it reads.

Config validation, the pre-flight, the engine, ColD Fusion and the CLI all read this table; adding a method
is one :class:`MergeMethod` here (and a kernel in :mod:`upcycle.merging.kernels` if it needs a new one).
Defaults follow mergekit 0.1.5 so that the same YAML gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..registry import Registry

MODEL_PARAMETERS = frozenset({"weight", "density"})  # the parameters that may be given per model


@dataclass(frozen=True)
class MergeMethod:
    """One merge method.

    ``kernel``: ``average`` (sum_i w_i theta_i), ``task_vectors`` (base + lambda * combine_i w_i delta_i, see
    :func:`~upcycle.merging.kernels.generalized_task_arithmetic`) or ``slerp`` (base and one other model).
    ``sparsify`` and ``consensus`` configure the task-vector kernel; ``normalize`` is the default of the
    ``normalize`` parameter; ``fusion_name`` is the name ``upcycle fuse --merge-method`` knows it by (None:
    fusion cannot use it).
    """

    name: str
    summary: str
    kernel: Literal["average", "task_vectors", "slerp"]
    parameters: frozenset[str]
    normalize: bool = False
    sparsify: Literal["magnitude", "dare"] | None = None
    consensus: bool = False
    fusion_name: str | None = None

    @property
    def needs_base(self) -> bool:
        return self.kernel != "average"

    @property
    def trims_by_magnitude(self) -> bool:
        """Whether ``trim_scope: model`` applies (TIES' magnitude trim)."""
        return self.sparsify == "magnitude"


METHODS: Registry[MergeMethod] = Registry("merge method")
for _method in (
    MergeMethod("linear", "weighted average of the models (model soups)", "average",
                frozenset({"weight", "normalize"}), normalize=True, fusion_name="average"),
    MergeMethod("task_arithmetic", "base + lambda * sum of weighted task vectors", "task_vectors",
                frozenset({"weight", "lambda", "normalize"}), fusion_name="task_arithmetic"),
    MergeMethod("ties", "trim task vectors to the top density, elect signs, disjoint mean", "task_vectors",
                frozenset({"weight", "density", "lambda", "normalize"}), normalize=True, sparsify="magnitude",
                consensus=True, fusion_name="ties"),
    MergeMethod("dare_linear", "drop 1 - density of each task vector at random, rescale, add", "task_vectors",
                frozenset({"weight", "density", "lambda", "normalize"}), sparsify="dare", fusion_name="dare_linear"),
    MergeMethod("dare_ties", "DARE's random drop, then TIES' sign election and disjoint mean", "task_vectors",
                frozenset({"weight", "density", "lambda", "normalize"}), sparsify="dare", consensus=True,
                fusion_name="dare_ties"),
    MergeMethod("slerp", "spherical interpolation between the base and one other model", "slerp",
                frozenset({"t"})),
):
    METHODS.register(_method.name, _method)

METHOD_NAMES = tuple(METHODS.names())
# every parameter some method reads: what a config's method-level ``parameters`` may hold
METHOD_PARAMETERS = frozenset().union(*(method.parameters for _, method in METHODS.items())) | MODEL_PARAMETERS
FUSION_METHODS = {method.fusion_name: method for _, method in METHODS.items() if method.fusion_name}
FUSION_PARAMETERS = frozenset().union(*(method.parameters for method in FUSION_METHODS.values()))
