"""The finetune engine and the finetune API: learning, determinism, caching in the store, saving with lineage."""

from __future__ import annotations

import time

import pytest
from conftest import TINY_OVERRIDES, sentiment_rows, write_rows

from upcycle import finetune
from upcycle.checkpoints import resolve_checkpoint
from upcycle.errors import ConfigError
from upcycle.protocols import PRESETS, get_protocol, parse_overrides
from upcycle.specs import FinetuneSpec
from upcycle.training import run_finetune
from upcycle.training.metrics import classification_metrics, regression_metrics

COLUMNS = {"text_column": "review", "label_column": "sentiment"}


def test_tiny_model_learns_a_separable_task(tiny_bert, sentiment_folder):
    spec = FinetuneSpec.create(tiny_bert, sentiment_folder, seed=0, overrides=TINY_OVERRIDES, **COLUMNS)
    result = run_finetune(spec)
    assert result.metric == "accuracy" and result.score >= 0.95
    assert result.metrics["macro_f1"] >= 0.95
    assert (result.n_train, result.n_test, result.epochs_run) == (240, 80, 4)
    assert result.train_examples_per_s > 0 and result.key == spec.key()


def test_same_spec_same_numbers_other_seed_other_numbers(tiny_bert, sentiment_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    overrides = TINY_OVERRIDES | {"epochs": 1, "learning_rate": 3e-4}

    def run(seed: int, folder: str):
        spec = FinetuneSpec.create(tiny_bert, sentiment_folder, seed=seed, overrides=overrides, **COLUMNS)
        result = run_finetune(spec, save_to=tmp_path / folder)
        return result, load_file(tmp_path / folder / "model.safetensors")

    (first, first_weights), (again, again_weights), (other, other_weights) = run(5, "a"), run(5, "b"), run(6, "c")
    assert first.key == again.key and first.metrics == again.metrics
    assert first_weights.keys() == again_weights.keys() == other_weights.keys()
    assert all(torch.equal(first_weights[name], again_weights[name]) for name in first_weights)  # bit for bit
    # another seed draws another head and another batch order: other weights, in the head and in the body
    assert first.key != other.key
    assert not torch.equal(first_weights["classifier.weight"], other_weights["classifier.weight"])
    body = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(first_weights[body], other_weights[body])


def test_regression_and_early_stopping(tiny_bert, tmp_path, monkeypatch):
    """Spearman on the validation split reaches its ceiling of 1.0 (a perfect ranking of 6 distinct inputs) and
    can only tie from then on: ties are not improvements, so training stops ``patience`` epochs after the best
    epoch, and the best epoch's weights, not the last's, are the ones evaluated and saved."""
    import torch
    from safetensors.torch import load_file

    from upcycle.checkpoints import load_for_classification, load_tokenizer
    from upcycle.training import loop
    from upcycle.training.batching import encode

    epochs, patience = 30, 4  # seed 0: the best epoch is the 5th, then four ties at 1.0
    per_epoch: list[tuple[dict[str, float], dict]] = []  # (validation metrics, weights) after each epoch
    real_fit = loop._fit

    def recording_fit(trainer, validate, metric, progress):
        def recorded():
            validation = validate()
            weights = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
            per_epoch.append((validation, weights))
            return validation

        return real_fit(trainer, recorded, metric, progress)

    monkeypatch.setattr(loop, "_fit", recording_fit)
    rows = [{"text": f"{'very ' * (i % 6)}long", "label": float(i % 6)} for i in range(120)]
    file = write_rows(tmp_path / "scores.csv", rows)
    overrides = TINY_OVERRIDES | {"epochs": epochs, "early_stopping_patience": patience}
    spec = FinetuneSpec.create(tiny_bert, file, seed=0, overrides=overrides, task_type="regression")
    result = run_finetune(spec, save_to=tmp_path / "kept")
    assert result.metric == "spearman" and set(result.metrics) == {"spearman", "pearson", "mse"}
    assert result.eval_precision == "fp32"  # auto never rounds regression outputs to bf16
    assert result.score > 0.5

    scores = [validation["spearman"] for validation, _ in per_epoch]
    best = scores.index(max(scores))  # the first epoch with the best score: a later tie is not better
    assert len(per_epoch) == result.epochs_run < epochs, scores  # it stopped early...
    assert result.epochs_run == best + 1 + patience, scores  # ...exactly `patience` epochs without improvement
    assert result.validation == per_epoch[best][0]  # the metrics of the kept epoch, all three of them
    last_validation, last_weights = per_epoch[-1]
    assert last_validation != result.validation  # the last epoch is another model (tied or worse)

    saved = load_file(tmp_path / "kept" / "model.safetensors")
    best_weights = per_epoch[best][1]
    assert all(torch.equal(saved[name], best_weights[name]) for name in saved)
    assert not all(torch.equal(saved[name], last_weights[name]) for name in saved)

    # the saved model, evaluated afresh, reproduces the reported validation and test metrics
    checkpoint = resolve_checkpoint(tmp_path / "kept")
    model = load_for_classification(checkpoint, None, seed=0)  # its own regression head is kept
    tokenizer = load_tokenizer(checkpoint)
    protocol = spec.protocol
    task = spec.task.load().subsample(protocol.max_train, protocol.max_eval, seed=protocol.data_seed)
    for split, expected in [("validation", result.validation), ("test", result.metrics)]:
        encoded = encode(tokenizer, task.splits[split], protocol.max_length, True)
        predictions = loop.predict(model, encoded, tokenizer.pad_token_id, precision="fp32", regression=True)
        assert loop.compute_metrics(task, predictions, encoded.labels) == expected, split


def test_pair_task_from_the_shared_data(tiny_bert, shared_data):
    overrides = {"max_train": 64, "max_eval": 32, "epochs": 1}
    result = run_finetune(FinetuneSpec.create(tiny_bert, shared_data / "rte", overrides=overrides))
    assert result.n_train == 64 and result.n_test == 32 and 0 <= result.score <= 1


def test_api_caches_in_the_store_and_saves_with_lineage(tiny_bert, sentiment_folder, store, tmp_path):
    kwargs = dict(overrides=TINY_OVERRIDES | {"epochs": 1}, store=store, **COLUMNS)
    first, cached = finetune(tiny_bert, sentiment_folder, **kwargs)
    assert not cached
    started = time.perf_counter()
    again, cached = finetune(tiny_bert, sentiment_folder, **kwargs)
    assert cached and again == first and time.perf_counter() - started < 5
    forced, cached = finetune(tiny_bert, sentiment_folder, force=True, **kwargs)
    assert not cached and forced.metrics == first.metrics and len(store.results()) == 1

    saved, cached = finetune(tiny_bert, sentiment_folder, save=tmp_path / "expert", **kwargs)
    assert not cached and saved.checkpoint_path == str((tmp_path / "expert").resolve())
    expert = resolve_checkpoint(tmp_path / "expert")
    assert expert.provenance["task"] == "toy_sentiment" and expert.provenance["metrics"] == saved.metrics
    entry = store.get_checkpoint(expert.fingerprint)
    assert entry.source_task == "toy_sentiment"
    assert entry.base_fingerprint == resolve_checkpoint(tiny_bert).fingerprint
    assert finetune(tiny_bert, sentiment_folder, save=tmp_path / "expert", **kwargs)[1]  # weights exist: cached


def test_protocol_presets_and_overrides():
    assert PRESETS["paper"].learning_rate_for("bert") == 2e-5
    assert PRESETS["paper"].learning_rate_for("roberta") == 5e-5
    assert (PRESETS["paper"].batch_size, PRESETS["paper"].epochs, PRESETS["paper"].warmup_ratio) == (256, 10, 0.006)
    custom = get_protocol("quick", parse_overrides(["epochs=3", "max_train=none", "learning_rate=2e-5"]))
    assert (custom.epochs, custom.max_train, custom.learning_rate, custom.name) == (3, None, 2e-5, "quick+")
    with pytest.raises(ConfigError, match="Unknown protocol field"):
        get_protocol("quick", {"epoch": 3})
    with pytest.raises(ConfigError, match="epochs"):
        get_protocol("quick", {"epochs": 0})
    with pytest.raises(ConfigError, match="Unknown protocol 'fast'"):
        get_protocol("fast")


def test_metrics_match_reference_values():
    metrics = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], num_labels=3)
    assert metrics["accuracy"] == 0.75
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    regression = regression_metrics([1.0, 2.0, 3.0, 5.0], [2.0, 4.0, 6.0, 8.0])
    assert regression["spearman"] == pytest.approx(1.0)
    assert regression["pearson"] == pytest.approx(0.9827076298239908)
    assert regression_metrics([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["spearman"] == 0.0


def test_unknown_text_pair_column_fails_before_training(tiny_bert, tmp_path):
    file = write_rows(tmp_path / "r.csv", sentiment_rows(40, 0))
    with pytest.raises(Exception, match="no column"):
        FinetuneSpec.create(tiny_bert, file, text_pair_column="hypothesis", **COLUMNS)


def test_run_specs_runs_only_what_the_store_lacks(tiny_bert, sentiment_folder, store):
    from upcycle.execute import pending, run_specs

    specs = [FinetuneSpec.create(tiny_bert, sentiment_folder, seed=seed, overrides=TINY_OVERRIDES | {"epochs": 1},
                                 **COLUMNS) for seed in (0, 1, 0)]
    assert len({hash(spec) for spec in specs}) == 2  # specs are hashable values
    first = list(run_specs(specs[:1], store))
    assert [r.seed for r in first] == [0] and len(pending(specs, store)) == 1
    rest = list(run_specs(specs, store))
    assert [r.seed for r in rest] == [1]
    assert sorted(r.seed for r in store.results()) == [0, 1]
    assert list(run_specs(specs, store)) == []


def test_micro_batching_gives_the_same_training_as_whole_batches(tmp_path, sentiment_folder, monkeypatch):
    """Gradient accumulation over chunks is exact (up to float summation order) when dropout is off."""
    import torch
    from conftest import save_tiny_bert
    from safetensors.torch import load_file

    from upcycle.training import loop

    base = save_tiny_bert(tmp_path / "no-dropout", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    spec = FinetuneSpec.create(base, sentiment_folder, overrides=TINY_OVERRIDES | {"epochs": 1}, **COLUMNS)
    whole = run_finetune(spec, save_to=tmp_path / "whole")
    monkeypatch.setattr(loop, "MICRO_BATCH_TOKENS", 20)  # 2-3 examples per forward pass
    chunked = run_finetune(spec, save_to=tmp_path / "chunked")
    assert chunked.metrics == whole.metrics
    first = load_file(tmp_path / "whole" / "model.safetensors")
    second = load_file(tmp_path / "chunked" / "model.safetensors")
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=2e-5, rtol=1e-4)
