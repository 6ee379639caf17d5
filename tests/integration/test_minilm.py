"""One real finetune of the default base (all-MiniLM-L6-v2) on real data, with a sane accuracy bound."""

from __future__ import annotations

import pytest

from upcycle import finetune
from upcycle.training import resolve_eval_precision


@pytest.mark.slow
def test_minilm_learns_sst2_from_a_few_hundred_examples(shared_data, store):
    result, cached = finetune("minilm", shared_data / "sst2", seed=0, store=store,
                              overrides={"max_train": 500, "max_eval": 400, "epochs": 3, "batch_size": 16})
    assert not cached and (result.n_train, result.n_test) == (500, 400)
    assert result.score > 0.70, result.metrics
    assert result.eval_precision == resolve_eval_precision("auto", "classification")
    assert store.get_result(result.key) == result
