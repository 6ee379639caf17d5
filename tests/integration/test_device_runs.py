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
