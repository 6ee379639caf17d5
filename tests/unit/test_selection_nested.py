"""Nested leave-one-target-out: the configuration is chosen on the other targets, then judged on the held-out one.
Synthetic evaluation frames, no model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from upcycle.errors import ConfigError
from upcycle.selection.evaluation import RANDOM, configurations, nested_selection, summarize_selection

TARGETS = ("t1", "t2", "t3", "t4", "t5")


def rows(estimator: str, regret_at_3: list[float], *, examples: int | None = None, seconds: float = 1.0,
         ndcg: list[float] | None = None) -> list[dict]:
    """One evaluation row per target; Regret@1 = 2 x Regret@3 so the two differ."""
    ndcg = ndcg or [0.5] * len(regret_at_3)
    return [{"target": t, "candidates": 4, "brute_force_seconds": 100.0, "estimator": estimator, "used": estimator,
             "cpu_seconds": seconds, "amortized_seconds": 0.0, "examples": examples, "regret_at_1": 2 * r,
             "regret_at_3": r, "regret_at_5": 0.0, "ndcg": n, "spearman": 0.0, "kendall": 0.0,
             "cost_fraction": seconds / 100} for t, r, n in zip(TARGETS, regret_at_3, ndcg, strict=True)]


def frame(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for part in parts for row in part])


def test_each_fold_is_judged_with_the_configuration_chosen_on_the_other_targets():
    # a is best on t2..t5 (0) but bad on t1 (8), so b (1 on t1, 2 elsewhere) wins every fold that contains t1
    evaluation = frame(rows("a", [8, 0, 0, 0, 0]), rows("b", [1, 2, 2, 2, 2]), rows("c", [5] * 5),
                       rows(RANDOM, [9] * 5, seconds=0.0))
    nested = nested_selection(evaluation)
    assert nested.chosen == {"t1": "a", "t2": "b", "t3": "b", "t4": "b", "t5": "b"}
    by_target = nested.per_target.set_index("target")
    assert by_target.loc["t1", "inner"] == 0.0 and by_target.loc["t2", "inner"] == pytest.approx(1.75)
    summary = nested.summary()
    assert summary["regret_at_3"] == pytest.approx((8 + 2 * 4) / 5)  # a on t1, b on the rest
    assert summary["regret_at_1"] == pytest.approx(2 * (8 + 2 * 4) / 5)
    # the non-nested table would quote a's 1.6: the best row, chosen having seen every target
    diagnostic = summarize_selection(evaluation)
    assert diagnostic["a"]["regret_at_3"] == pytest.approx(1.6) and summary["regret_at_3"] > 1.6
    assert summary["in_sample"]["configuration"] == "a" and summary["in_sample"]["regret_at_3"] == pytest.approx(1.6)
    assert summary["chosen_counts"] == {"b": 4, "a": 1} and summary["selection_metric"] == "regret_at_3"
    assert summary["candidates"] == ["a", "b", "c"]  # the reference rows never compete
    low, high = summary["regret_at_3_ci"]
    assert low <= summary["regret_at_3"] <= high
    assert summary["cost_fraction"] == pytest.approx(0.01)


def test_ties_go_to_the_cheaper_configuration_then_the_name():
    same = [1, 1, 1, 1, 1]
    nested = nested_selection(frame(rows("slow", same, seconds=5.0), rows("fast", same, seconds=0.5)))
    assert set(nested.chosen.values()) == {"fast"}
    nested = nested_selection(frame(rows("b", same), rows("a", same)))
    assert set(nested.chosen.values()) == {"a"}


def test_the_sample_size_is_chosen_with_the_estimator():
    evaluation = frame(rows("logme", [3] * 5, examples=64), rows("logme", [1] * 5, examples=128),
                       rows("knn", [2] * 5, examples=64), rows("knn", [2] * 5, examples=128),
                       rows(RANDOM, [9] * 5, seconds=0.0))
    nested = nested_selection(evaluation)
    assert set(nested.chosen.values()) == {"logme@128"}
    assert set(nested.per_target["examples"]) == {128} and set(nested.per_target["estimator"]) == {"logme"}
    assert nested.candidates == ("knn@128", "knn@64", "logme@128", "logme@64")
    # the diagnostic table splits the sizes apart too; the reference rows keep their names
    assert list(configurations(evaluation).unique()) == ["logme@64", "logme@128", "knn@64", "knn@128", RANDOM]
    assert set(summarize_selection(evaluation)) == {"logme@64", "logme@128", "knn@64", "knn@128", RANDOM}
    # one sample size: the table's names stay plain (the committed reports), the nested choice names the size
    single = frame(rows("logme", [1] * 5, examples=128), rows("knn", [2] * 5, examples=128))
    assert set(summarize_selection(single)) == {"logme", "knn"}
    assert set(nested_selection(single).chosen.values()) == {"logme@128"}
    # a frame from before the examples column (the committed one): plain names
    assert set(nested_selection(single.drop(columns="examples")).chosen.values()) == {"logme"}


def test_the_pool_the_metric_and_undefined_regret():
    evaluation = frame(rows("a", [8, 0, 0, 0, 0], ndcg=[0.9] * 5), rows("b", [1, 2, 2, 2, 2], ndcg=[0.8] * 5))
    assert set(nested_selection(evaluation, pool=["b"]).chosen.values()) == {"b"}
    with pytest.raises(ConfigError, match="Not in the evaluation: oracle"):
        nested_selection(evaluation, pool=["oracle"])
    assert set(nested_selection(evaluation, metric="ndcg").chosen.values()) == {"a"}  # higher NDCG is better
    with pytest.raises(ConfigError, match="must be one of"):
        nested_selection(evaluation, metric="accuracy")
    with pytest.raises(ConfigError, match="at least two targets"):
        nested_selection(evaluation[evaluation["target"] == "t1"])
    # Regret undefined (best score <= 0) on t2: left out of the means that choose, and of the nested mean
    undefined = evaluation.copy()
    undefined.loc[undefined["target"] == "t2", ["regret_at_1", "regret_at_3"]] = np.nan
    nested = nested_selection(undefined)
    assert nested.chosen["t2"] == "b"  # (8 + 0 + 0 + 0) / 4 = 2 vs (1 + 2 + 2 + 2) / 4 = 1.75
    assert nested.summary()["regret_at_3"] == pytest.approx(np.nanmean(nested.per_target["regret_at_3"]))


def test_the_report_leads_with_the_nested_figure_and_keeps_the_table_as_a_diagnostic():
    from upcycle.checkpoints import CheckpointRef
    from upcycle.protocols import get_protocol
    from upcycle.ranking import Bench, Candidate
    from upcycle.report.selection import results_json, results_markdown
    from upcycle.tasks import TaskRef

    ref = CheckpointRef(reference="/zoo/base", name="base", fingerprint="base-fp", model_type="bert")
    bench = Bench(name="mini", arch="bert-2x32", base=Candidate(checkpoint=ref), candidates=(),
                  targets=tuple(TaskRef(source=f"/data/{t}", name=t, fingerprint=t) for t in TARGETS),
                  seeds=(0, 1), protocol=get_protocol("quick"))
    evaluation = frame(rows("a", [8, 0, 0, 0, 0], examples=128), rows("b", [1, 2, 2, 2, 2], examples=128),
                       rows(RANDOM, [9] * 5, seconds=0.0))
    summary, nested = summarize_selection(evaluation), nested_selection(evaluation)
    markdown = results_markdown(evaluation, summary, "a", bench, nested)
    lines = markdown.splitlines()
    headline = lines.index("## Nested leave-one-target-out (the headline)")
    diagnostic = lines.index("## Diagnostic (not nested: every row saw every target)")
    assert headline < diagnostic < next(i for i, line in enumerate(lines) if line.startswith("| **a** (default)"))
    assert "| 6.40 [4.0, 11.2] | 3.20 [2.0, 5.6] | 0.00 [0.0, 0.0] | 0.500 [0.50, 0.50] | 1.00% |" in lines
    assert "| t1 | a@128 | 0.00 | 16.00 | 8.00 |" in lines and "| t2 | b@128 | 1.75 | 4.00 | 2.00 |" in lines
    assert "Chosen: b@128 4 of 5, a@128 1 of 5." in lines
    document = json.loads(results_json(evaluation, summary, "a", nested))
    assert set(document) == {"default", "candidates", "targets", "device", "estimators", "per_target", "nested"}
    assert document["nested"]["chosen"] == {"t1": "a@128", "t2": "b@128", "t3": "b@128", "t4": "b@128",
                                            "t5": "b@128"}
    assert document["nested"]["regret_at_3"] == 3.2 and document["nested"]["selection_metric"] == "regret_at_3"
    assert set(document["nested"]) >= {"regret_at_1", "regret_at_3", "regret_at_5", "ndcg", "regret_at_1_ci",
                                       "regret_at_3_ci", "chosen_counts", "in_sample", "cost_fraction"}
    # without a nested figure, the report is what it was
    plain = results_markdown(evaluation, summary, "a", bench)
    assert "Nested" not in plain and "nested" not in json.loads(results_json(evaluation, summary, "a"))
