"""The device a finetune ran on is recorded in its result and never enters its key; --device is checked first."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OVERRIDES
from typer.testing import CliRunner

from upcycle.cli import app
from upcycle.specs import FinetuneSpec
from upcycle.training import run_finetune

COLUMNS = {"text_column": "review", "label_column": "sentiment"}


def test_the_device_is_recorded_and_not_part_of_the_key(tiny_bert, sentiment_folder):
    spec = FinetuneSpec.create(tiny_bert, sentiment_folder, overrides=TINY_OVERRIDES | {"epochs": 1}, **COLUMNS)
    result = run_finetune(spec, device="cpu")
    assert result.device == "cpu" and result.key == spec.key()
    assert "device" not in FinetuneSpec.model_fields and "device" not in type(spec.protocol).model_fields


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_finetune_on_a_missing_gpu_fails_in_one_line_before_any_work(tmp_path, sentiment_folder):
    done = CliRunner().invoke(app, ["finetune", "minilm", str(sentiment_folder), "--device", "cuda", "--db",
                                    str(tmp_path / "x.db")])
    assert done.exit_code == 2 and "CUDA is not available here" in done.output and "Traceback" not in done.output
    assert done.output.count("\n") == 1 and not (tmp_path / "x.db").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_finetune_on_the_gpu_is_the_same_experiment(tiny_bert, sentiment_folder):
    spec = FinetuneSpec.create(tiny_bert, sentiment_folder, overrides=TINY_OVERRIDES, **COLUMNS)
    on_gpu, on_cpu = run_finetune(spec, device="cuda"), run_finetune(spec, device="cpu")
    assert on_gpu.key == on_cpu.key and on_gpu.device.startswith("cuda:0 (")
    assert abs(on_gpu.score - on_cpu.score) < 0.1  # the same experiment, up to the devices' arithmetic


def _sabotaged(monkeypatch, failure):
    """Make every model a finetune loads call ``failure(model, outputs, calls)`` after each forward pass."""
    import upcycle.training.loop as loop

    load = loop.load_for_classification

    def loading(*args, **kwargs):
        model = load(*args, **kwargs)
        calls = [0]

        def after_forward(module, inputs, outputs):
            calls[0] += 1
            return failure(module, outputs, calls[0])

        model.register_forward_hook(after_forward)
        return model

    monkeypatch.setattr(loop, "load_for_classification", loading)


def test_out_of_memory_is_one_line_naming_what_to_lower_and_loses_nothing(tiny_bert, sentiment_folder, tmp_path,
                                                                          monkeypatch):
    db, saved = tmp_path / "oom.db", tmp_path / "expert"
    common = ["finetune", str(tiny_bert), str(sentiment_folder), "--text-column", "review", "--label-column",
              "sentiment", "--db", str(db), *(a for k, v in TINY_OVERRIDES.items() for a in ("--set", f"{k}={v}"))]
    assert CliRunner().invoke(app, common).exit_code == 0  # a result that must survive

    def out_of_memory(module, outputs, calls):
        if calls == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    _sabotaged(monkeypatch, out_of_memory)
    done = CliRunner().invoke(app, [*common, "--seed", "1", "--save", str(saved)])
    batch = TINY_OVERRIDES["batch_size"]
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert done.output.startswith(f"error: Out of memory on cpu while finetuning {tiny_bert.name} on toy_sentiment "
                                  f"(batch size {batch}, at most 8192 padded tokens per forward pass). Lower the "
                                  f"batch (--set batch_size={batch // 2}) or the tokens per pass "
                                  "(UPCYCLE_MICRO_BATCH_TOKENS=4096; same gradient), or run fewer jobs per GPU")
    assert not saved.exists()
    assert "1 finetune results" in CliRunner().invoke(app, ["results", "--db", str(db)]).output


def test_a_diverged_finetune_is_never_stored_or_saved(tiny_bert, sentiment_folder, tmp_path, monkeypatch):
    def diverging(module, outputs, calls):
        if calls >= 2 and module.training:  # the second training step on: a NaN loss
            outputs.loss = outputs.loss * float("nan")
        return outputs

    _sabotaged(monkeypatch, diverging)
    db, saved = tmp_path / "nan.db", tmp_path / "expert"
    done = CliRunner().invoke(app, ["finetune", str(tiny_bert), str(sentiment_folder), "--text-column", "review",
                                    "--label-column", "sentiment", "--db", str(db), "--save", str(saved),
                                    *(a for k, v in TINY_OVERRIDES.items() for a in ("--set", f"{k}={v}"))])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    assert "error: Training diverged: the loss became nan in epoch 1 (steps 1-" in done.output
    assert not saved.exists() and "0 finetune results" in CliRunner().invoke(app, ["results", "--db", str(db)]).output
