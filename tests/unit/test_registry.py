"""The registries: one generic Registry, the estimators and the merge methods that config, fusion and CLI read."""

from __future__ import annotations

import pytest

from upcycle.errors import ConfigError
from upcycle.merging import load_config
from upcycle.merging.config import plan_for
from upcycle.merging.methods import FUSION_METHODS, FUSION_PARAMETERS, METHOD_PARAMETERS, METHODS
from upcycle.registry import Registry
from upcycle.selection.estimate import get_estimator, reads_sample
from upcycle.selection.estimators import ESTIMATORS
from upcycle.selection.estimators.combined import RankFusion


def test_a_registry_lists_sorted_names_and_refuses_unknown_and_duplicate_ones():
    colours: Registry[int] = Registry("colour", hint=" (or a hex code)")
    colours.register("red", 1)
    colours.register("blue", 2)
    assert colours.names() == ["blue", "red"] and list(colours) == ["blue", "red"] and len(colours) == 2
    assert colours.get("red") == 1 and "blue" in colours and "green" not in colours
    assert colours.items() == [("blue", 2), ("red", 1)]
    with pytest.raises(ConfigError, match=r"^Unknown colour 'green'; known: blue, red \(or a hex code\)\.$"):
        colours.get("green")
    with pytest.raises(ValueError, match="Two colours are named red"):
        colours.register("red", 3)


def test_estimators_by_name_and_rank_fusions_by_plus():
    assert {"logme", "knn", "probe", "retrieval", "semb", "prior", "combined"} <= set(ESTIMATORS.names())
    assert type(get_estimator("logme")).name == "logme"
    fused = get_estimator("logme+retrieval")
    assert isinstance(fused, RankFusion) and fused.members == ("logme", "retrieval")
    with pytest.raises(ConfigError, match=r"Unknown estimator 'logme\+nope'; known: .*logme.*joined by '\+'"):
        get_estimator("logme+nope")


def test_which_estimators_read_the_target_sample():
    """The evaluation runs those that do not once per target, whatever sample sizes it compares."""
    assert [name for name in ESTIMATORS.names() if not reads_sample(name)] == ["fewshot", "prior", "random", "size"]
    assert reads_sample("logme+prior") and not reads_sample("prior+size") and reads_sample("ranker")
    with pytest.raises(ConfigError, match="Unknown estimator"):
        reads_sample("prior+nope")


def test_merge_methods_keep_mergekits_defaults_and_parameters():
    # mergekit 0.1.5's normalize defaults, and which methods combine task vectors against a base
    assert {name: m.normalize for name, m in METHODS.items()} == {
        "dare_linear": False, "dare_ties": False, "linear": True, "slerp": False, "task_arithmetic": False,
        "ties": True}
    assert [name for name, m in METHODS.items() if not m.needs_base] == ["linear"]
    assert METHOD_PARAMETERS == {"weight", "density", "lambda", "normalize", "t"}
    assert set(FUSION_METHODS) == {"average", "task_arithmetic", "ties", "dare_ties", "dare_linear"}
    assert FUSION_METHODS["average"].name == "linear" and FUSION_PARAMETERS == {"weight", "density", "lambda",
                                                                                 "normalize"}


def test_the_config_reads_the_registry():
    ties = load_config({"merge_method": "ties", "base_model": "b", "models": [{"model": "x"}, {"model": "y"}]})
    assert ties.method is METHODS.get("ties") and plan_for(ties, "w").normalize is True
    linear = load_config({"merge_method": "linear", "models": [{"model": "x"}]})
    assert linear.inputs == ["x"] and plan_for(linear, "w").normalize is True
    with pytest.raises(ConfigError, match="needs a base_model"):
        load_config({"merge_method": "task_arithmetic", "models": [{"model": "x"}]})
    with pytest.raises(ConfigError, match="merge_method.*'linear'.*'slerp'"):
        load_config({"merge_method": "soup", "models": [{"model": "x"}]})
    with pytest.raises(ConfigError, match="trim_scope: model applies to ties"):
        load_config({"merge_method": "dare_ties", "base_model": "b", "trim_scope": "model",
                     "models": [{"model": "x"}]})
