"""The convergence benchmark's criteria (benchmarks/base_convergence.py) on planted per-target tables."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest

from upcycle.protocols import PRESETS

SPEC = importlib.util.spec_from_file_location(
    "base_convergence", Path(__file__).parents[2] / "benchmarks" / "base_convergence.py")
base_convergence = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(base_convergence)


def arm(**scores: tuple[float, ...]) -> dict[str, dict]:
    """A table as ``base_convergence.table`` builds it: per target, scores by seed, mean and spread."""
    return {target: {"scores": dict(enumerate(values)), "mean": statistics.fmean(values),
                     "spread": max(values) - min(values), "train_seconds": 1.0,
                     "example_epochs": 10} for target, values in scores.items()}


def test_the_seed_deviation_is_pooled_over_the_arms_that_ran_the_target():
    tables = {"reference": arm(a=(0.50, 0.50), b=(0.70, 0.72)), "fast": arm(a=(0.40, 0.44)), "single": arm(a=(0.9,))}
    # variances 0 and 0.0008 (0.04^2 / 2) pooled: sqrt(0.0004) = 0.02; a one-seed arm adds nothing
    assert base_convergence.pooled_seed_sd(tables, "a") == pytest.approx(0.02)
    assert base_convergence.pooled_seed_sd(tables, "b") == pytest.approx(math.sqrt(0.0002))
    assert base_convergence.pooled_seed_sd(tables, "c") is None


def test_the_literal_rule_fails_a_target_whose_reference_seeds_agree_and_the_noise_rule_does_not():
    reference = arm(a=(0.68, 0.68), b=(0.80, 0.82))
    candidate = arm(a=(0.66, 0.67), b=(0.81, 0.83))  # 1.5 points short on a, 1 point ahead on b
    verdict = base_convergence.judge(candidate, reference, ["a", "b"], {"a": 0.01, "b": 0.01})
    assert verdict["gap_points"] == pytest.approx({"a": 1.5, "b": -1.0})
    assert verdict["mean_gap_points"] == pytest.approx(0.25)
    assert verdict["short_beyond_seed_spread"] == ["a"] and not verdict["meets_literal"]
    assert verdict["noise_tolerance_points"]["a"] == pytest.approx(3.0)  # 3 x 1 point x sqrt(1/2 + 1/2)
    assert verdict["short_beyond_noise"] == [] and verdict["meets"]


def test_a_large_mean_gap_or_a_missing_target_fails_both_rules():
    reference = arm(a=(0.80, 0.82), b=(0.80, 0.82))
    behind = arm(a=(0.70, 0.72), b=(0.79, 0.81))  # 10 points short on a: beyond any tolerance, mean 5.5
    verdict = base_convergence.judge(behind, reference, ["a", "b"], {"a": 0.01, "b": 0.01})
    assert verdict["short_beyond_noise"] == ["a"] and not verdict["meets"] and not verdict["meets_literal"]
    partial = base_convergence.judge(arm(a=(0.81, 0.81)), reference, ["a", "b"], {"a": 0.01, "b": 0.01})
    assert partial["targets"] == ["a"] and not partial["meets"]


def test_the_choice_is_the_cheapest_candidate_that_meets_on_the_choose_on_targets():
    def parts(meets: bool, cost: int, held_out_meets: bool = True) -> dict:
        return {"choose_on": {"meets": meets, "example_epochs": cost}, "held_out": {"meets": held_out_meets}}

    judged = {"quick": parts(False, 10), "long": parts(True, 500), "middle": parts(True, 200, held_out_meets=False)}
    assert base_convergence.choose(judged) == "middle"  # the held-out half judges the choice; it does not make it
    assert base_convergence.choose({"quick": parts(False, 10)}) is None


def test_the_converged_preset_is_the_protocol_the_committed_benchmark_chose():
    """``upcycle``'s ``converged`` preset is the candidate ``base_convergence.py`` chose (bf16 training aside: the
    benchmark trains in bf16 like the committed grid, the preset keeps fp32 like ``quick`` and ``paper``), so the
    committed grid under ``converged+`` and the benchmark's arm are the same finetunes, key for key."""
    report = json.loads((Path(__file__).parents[2] / "benchmarks" / "results" / "base_convergence.json").read_text())
    chosen = report["nested_choice"]["chosen"]
    assert chosen is not None and report["candidates"][chosen]["judged"]["choose_on"]["meets"]
    overrides = report["candidates"][chosen]["overrides"]
    assert overrides.pop("train_precision") == "bf16"
    assert (PRESETS["converged"].model_dump(exclude={"name"})
            == PRESETS["quick"].with_overrides(overrides).model_dump(exclude={"name"}))
