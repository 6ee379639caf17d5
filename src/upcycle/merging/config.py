"""Merge configurations: mergekit's YAML schema for the methods we share, plus upcycle's own keys.

Accepted (mergekit)::

    merge_method: ties            # linear | task_arithmetic | ties | dare_linear | dare_ties | slerp
    base_model: minilm
    models:
      - model: runs/zoo/minilm-sst2
        parameters: {weight: 1.0, density: 0.5}
      - model: runs/zoo/minilm-mrpc
        parameters:
          weight: [{filter: attention, value: 0.5}, {value: 1.0}]   # per-tensor by substring, last = default
    parameters: {lambda: 1.0, normalize: true}
    dtype: float32

upcycle's keys: ``heads: drop | merge`` (classification heads of encoders: dropped by default, merged when
their shapes agree and ``merge`` is asked), ``seed`` (DARE), ``trim_scope: tensor | model`` (TIES keeps the
top ``density`` of each tensor, the default as in mergekit, or of each model's whole task vector at once),
and ``tensor_parameters``: a list of
``{match: REGEX, parameters: {...}}`` applied in order to every model's and the method's parameters for the
tensors whose name matches (later entries win).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, validation_problems
from .methods import METHOD_NAMES, METHOD_PARAMETERS, METHODS, MODEL_PARAMETERS, MergeMethod

Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]  # the registered methods, for pydantic's message
ParameterValue = float | bool | list[dict[str, Any]]


def _only_known(value: dict[str, Any], known: set[str], what: str) -> dict[str, Any]:
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown {what} parameter(s) {unknown}; known: {sorted(known)}")
    return value


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _only_known(value, MODEL_PARAMETERS, "model")


class TensorRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str
    parameters: dict[str, float | bool]

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression ({error})") from None
        return value


class MergeConfig(BaseModel):
    """A validated merge configuration (see the module docstring for the schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    merge_method: Method
    models: list[ModelEntry] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    heads: Literal["drop", "merge"] = "drop"
    seed: int = 0
    trim_scope: Literal["tensor", "model"] = "tensor"
    tensor_parameters: list[TensorRule] = Field(default_factory=list)

    @field_validator("parameters")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _only_known(value, METHOD_PARAMETERS, "method")

    @model_validator(mode="after")
    def _consistent(self) -> MergeConfig:
        if self.method.needs_base and self.base_model is None:
            raise ValueError(f"{self.merge_method} needs a base_model")
        if not self.merged_entries:
            raise ValueError("models lists nothing to merge besides the base_model")
        if self.trim_scope == "model" and not self.method.trims_by_magnitude:
            raise ValueError(f"trim_scope: model applies to ties (magnitude trimming), not {self.merge_method}")
        if self.merge_method == "slerp":
            others = [m for m in self.models if m.model != self.base_model]
            if len(others) != 1:
                raise ValueError("slerp merges base_model with exactly one other model")
            if "t" not in self.parameters:
                raise ValueError("slerp needs parameters.t (0 = base_model, 1 = the other model)")
        return self

    @property
    def method(self) -> MergeMethod:
        return METHODS.get(self.merge_method)

    @property
    def merged_entries(self) -> list[ModelEntry]:
        """The models whose tensors are combined. For ``linear`` that is every listed model; the other methods
        take the base apart (mergekit lists it among ``models`` at times) and combine the rest."""
        if not self.method.needs_base:
            return list(self.models)
        return [m for m in self.models if m.model != self.base_model]

    @property
    def inputs(self) -> list[str]:
        return [m.model for m in self.merged_entries]


@dataclass(frozen=True)
class TensorPlan:
    """What to do with one tensor: the method and its resolved numbers. ``weights``/``densities`` follow
    :attr:`MergeConfig.inputs`."""

    method: str
    weights: tuple[float, ...]
    densities: tuple[float, ...]
    lam: float
    normalize: bool
    t: float | None


def _resolve(value: ParameterValue | None, tensor: str, default: Any) -> Any:
    """A scalar, or mergekit's filter list: the first ``filter`` that is a substring of the name, else the
    entry without a filter."""
    if value is None:
        return default
    if not isinstance(value, list):
        return value
    fallback = default
    for item in value:
        if "filter" not in item:
            fallback = item["value"]
        elif item["filter"] in tensor:
            return item["value"]
    return fallback


def plan_for(config: MergeConfig, tensor: str) -> TensorPlan:
    """Resolve every parameter for one tensor name: method < model < filter lists < ``tensor_parameters``."""
    overrides: dict[str, float | bool] = {}
    for rule in config.tensor_parameters:
        if re.search(rule.match, tensor):
            overrides.update(rule.parameters)
    method = config.parameters

    def value(key: str, own: dict[str, ParameterValue], default: Any) -> Any:
        if key in overrides:
            return overrides[key]
        return _resolve(own.get(key), tensor, _resolve(method.get(key), tensor, default))

    entries = config.merged_entries
    weights = tuple(float(value("weight", m.parameters, 1.0)) for m in entries)
    densities = tuple(float(value("density", m.parameters, 1.0)) for m in entries)
    for density in densities:
        if not 0 <= density <= 1:
            raise ConfigError(f"density must be in [0, 1] (tensor {tensor}: {density}).")
    t = value("t", {}, None)
    return TensorPlan(
        method=config.merge_method, weights=weights, densities=densities, lam=float(value("lambda", {}, 1.0)),
        normalize=bool(value("normalize", {}, config.method.normalize)),
        t=None if t is None else float(t),
    )


def load_config(source: str | Path | dict[str, Any]) -> MergeConfig:
    """Parse and validate a YAML file (or a dict); every problem is one ConfigError line."""
    if isinstance(source, dict):
        data, where = source, "merge config"
    else:
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the merge config ({error.strerror}).") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]}).") from None
        where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a merge config is a mapping with merge_method and models.")
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{where}: {validation_problems(error, 'config')}.") from None
