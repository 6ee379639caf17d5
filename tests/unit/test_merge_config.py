"""Merge configs: mergekit's schema accepted, our keys, per-tensor resolution, one clear error per mistake."""

from __future__ import annotations

import pytest

from upcycle.errors import ConfigError
from upcycle.merging import load_config
from upcycle.merging.config import plan_for

MERGEKIT_TIES = """
models:
  - model: base
  - model: expert-a
    parameters:
      density: 0.5
      weight: [{filter: attention, value: 0.25}, {value: 1.0}]
  - model: expert-b
    parameters: {density: 0.7, weight: 0.5}
merge_method: ties
base_model: base
parameters:
  normalize: true
  lambda: 0.8
dtype: bfloat16
"""


def test_a_mergekit_ties_config_resolves_per_tensor(tmp_path):
    path = tmp_path / "ties.yaml"
    path.write_text(MERGEKIT_TIES)
    config = load_config(path)
    assert config.inputs == ["expert-a", "expert-b"] and config.dtype == "bfloat16" and config.heads == "drop"
    attention = plan_for(config, "encoder.layer.0.attention.self.query.weight")
    assert attention.weights == (0.25, 0.5) and attention.densities == (0.5, 0.7)
    assert attention.lam == 0.8 and attention.normalize is True and attention.method == "ties"
    assert plan_for(config, "encoder.layer.0.output.dense.weight").weights == (1.0, 0.5)


def test_tensor_parameters_override_by_regex_in_order_and_defaults_follow_mergekit():
    config = load_config({
        "merge_method": "task_arithmetic", "base_model": "b", "models": [{"model": "x"}, {"model": "y"}],
        "parameters": {"lambda": 0.5},
        "tensor_parameters": [{"match": r"^embeddings\.", "parameters": {"lambda": 0.0}},
                              {"match": r"word_embeddings", "parameters": {"weight": 2.0}}],
    })
    plan = plan_for(config, "embeddings.word_embeddings.weight")
    assert plan.lam == 0.0 and plan.weights == (2.0, 2.0) and plan.normalize is False
    other = plan_for(config, "encoder.layer.1.output.dense.bias")
    assert other.lam == 0.5 and other.weights == (1.0, 1.0)
    linear = load_config({"merge_method": "linear", "models": [{"model": "x"}, {"model": "y"}]})
    assert plan_for(linear, "w").normalize is True and plan_for(linear, "w").t is None
    slerp = load_config({"merge_method": "slerp", "base_model": "x", "models": [{"model": "x"}, {"model": "y"}],
                         "parameters": {"t": 0.3}})
    assert plan_for(slerp, "w").t == 0.3 and slerp.inputs == ["y"]


@pytest.mark.parametrize("data, message", [
    ({"models": [{"model": "x"}]}, "merge_method"),
    ({"merge_method": "average", "models": [{"model": "x"}]}, "merge_method"),
    ({"merge_method": "ties", "models": [{"model": "x"}]}, "needs a base_model"),
    ({"merge_method": "linear", "models": []}, "models"),
    ({"merge_method": "linear", "models": [{"model": "x", "parameters": {"wieght": 1}}]}, "wieght"),
    ({"merge_method": "linear", "models": [{"model": "x"}], "parameters": {"lamda": 1}}, "lamda"),
    ({"merge_method": "slerp", "base_model": "x", "models": [{"model": "x"}, {"model": "y"}]}, "parameters.t"),
    ({"merge_method": "slerp", "base_model": "x", "models": [{"model": "y"}, {"model": "z"}],
      "parameters": {"t": 0.5}}, "exactly one other"),
    ({"merge_method": "linear", "models": [{"model": "x"}], "tensor_parameters": [{"match": "(", "parameters": {}}]},
     "regular expression"),
    ({"merge_method": "linear", "models": [{"model": "x"}], "dtype": "int4"}, "dtype"),
])
def test_each_mistake_is_one_clear_error(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)
    out_of_range = load_config({"merge_method": "ties", "base_model": "b",
                                "models": [{"model": "x", "parameters": {"density": 1.5}}]})
    with pytest.raises(ConfigError, match="density"):
        plan_for(out_of_range, "w")
