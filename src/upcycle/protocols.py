"""Finetuning protocols: every hyperparameter that decides what a finetune learns, as one frozen value.

Three presets exist, and every field of each can be overridden (``--set epochs=3``):

* ``quick``: sized for tests, the demo and a first look on 2 CPU cores (1000 train and 1000 eval examples,
  2 epochs, max length 128). It does not train a base to convergence: vanilla MiniLM ends 23.5 points short
  of a long reference run on average over the committed grid's targets.
* ``converged``: ``quick`` with up to 5000 train examples, up to 8 epochs and early stopping on validation
  (patience 2), the best validation epoch kept. Chosen by ``benchmarks/base_convergence.py`` as the cheapest
  candidate whose vanilla MiniLM reaches the long reference (10 epochs, patience 3) within 2 points on average
  and within seed noise on every target: chosen on 5 of the grid's targets, judged on the other 5 (mean gap
  -0.19 points there). The protocol of ``select --verify-top`` and of the committed leaderboard's rerun.
* ``paper``: the settings of the model-recycling ranking (Choshen et al., "Where to start?"): lr 5e-5
  (2e-5 for BERT-family models), batch 256, 10 epochs, 0.6% warmup, weight decay 0.01, early stopping on the
  validation split, all training data.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, validation_problems


class Protocol(BaseModel):
    """Hyperparameters of one finetune. Frozen; part of every :class:`~upcycle.finetune.FinetuneSpec` key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    max_train: int | None = Field(default=None, ge=1, description="cap on train examples (stratified sample)")
    max_eval: int | None = Field(default=None, ge=1, description="cap on validation and test examples")
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    learning_rate_by_model_type: tuple[tuple[str, float], ...] = Field(
        default=(), description="per model_type learning rate, e.g. (('bert', 2e-5),)"
    )
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    max_length: int = Field(default=128, ge=8)
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="stop after this many epochs without validation improvement"
    )
    data_seed: int = Field(default=0, description="seed of the train/eval subsample, shared by all seeds")
    length_grouping: bool = Field(default=True, description="batch examples of similar length together")
    train_precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16: autocast the forward pass (fp32 weights and optimizer); opt-in"
    )
    eval_precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 autocast for classification where the CPU has native bf16, else fp32"
    )

    def learning_rate_for(self, model_type: str) -> float:
        return dict(self.learning_rate_by_model_type).get(model_type, self.learning_rate)

    def with_overrides(self, overrides: dict[str, Any]) -> Protocol:
        """A copy with ``overrides`` applied and validated; ``name`` gains a ``+`` when anything changed."""
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"Unknown protocol field(s) {unknown}; known: {sorted(type(self).model_fields)}.")
        data = self.model_dump() | overrides
        if "name" not in overrides:
            data["name"] = self.name.rstrip("+") + "+"
        try:
            return Protocol.model_validate(data)
        except ValidationError as error:
            raise ConfigError(f"Invalid protocol override: {validation_problems(error)}.") from None


PRESETS: dict[str, Protocol] = {
    "quick": Protocol(
        name="quick", max_train=1000, max_eval=1000, epochs=2, batch_size=32, learning_rate=5e-5,
        warmup_ratio=0.06, weight_decay=0.01, max_length=128,
    ),
    "converged": Protocol(
        name="converged", max_train=5000, max_eval=1000, epochs=8, batch_size=32, learning_rate=5e-5,
        warmup_ratio=0.06, weight_decay=0.01, max_length=128, early_stopping_patience=2,
    ),
    "paper": Protocol(
        name="paper", max_train=None, max_eval=None, epochs=10, batch_size=256, learning_rate=5e-5,
        learning_rate_by_model_type=(("bert", 2e-5),), warmup_ratio=0.006, weight_decay=0.01, max_length=256,
        early_stopping_patience=3,
    ),
}


def get_protocol(name_or_protocol: str | Protocol, overrides: dict[str, Any] | None = None) -> Protocol:
    """A preset by name (or a Protocol as is), with ``overrides`` applied."""
    if isinstance(name_or_protocol, Protocol):
        protocol = name_or_protocol
    elif name_or_protocol in PRESETS:
        protocol = PRESETS[name_or_protocol]
    else:
        raise ConfigError(f"Unknown protocol '{name_or_protocol}'; choose one of {sorted(PRESETS)}.")
    return protocol.with_overrides(overrides or {})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "learning_rate=2e-5", "max_train=none"]`` -> typed values (JSON where it parses)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override '{pair}' must look like field=value.")
        text = raw.strip()
        if text.lower() in ("none", "null"):
            value: Any = None
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
        overrides[key.strip()] = value
    return overrides
