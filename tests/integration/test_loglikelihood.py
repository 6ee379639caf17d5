"""The scoring primitive against one full forward pass per request, on tiny random Llama and T5 checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from upcycle.errors import CheckpointError, ConfigError
from upcycle.scoring.loglikelihood import load_language_model, loglikelihood, loglikelihood_unbatched

INPUTS = ["the movie was excellent and the actors were great", "a dreadful plot", "quite boring",
          "the story was really wonderful , a superb film with a delightful scene and brilliant actors"]
OPTIONS = [" negative", " positive", " very mixed feelings"]


def direct_requests():
    contexts = [f"Is this review negative or positive?\n{x}\nAnswer:" for x in INPUTS for _ in OPTIONS]
    continuations = [y for _ in INPUTS for y in OPTIONS]
    return contexts, continuations


def flipped_requests():
    contexts = [f"{x}\nAnswer:{y}\nInstruction:" for x in INPUTS for y in OPTIONS]
    continuations = [" Is this review negative or positive?" for _ in INPUTS for _ in OPTIONS]
    groups = [i for i in range(len(INPUTS)) for _ in OPTIONS]
    return contexts, continuations, groups


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_t5"])
@pytest.mark.parametrize("batch_tokens", [2048, 24])
def test_batched_equals_one_forward_pass_per_request(kind, batch_tokens, request):
    lm = load_language_model(str(request.getfixturevalue(kind)), device="cpu")
    for contexts, continuations, groups in [(*direct_requests(), None), flipped_requests()]:
        fast = loglikelihood(lm, contexts, continuations, groups=groups, batch_tokens=batch_tokens)
        slow = loglikelihood_unbatched(lm, contexts, continuations)
        assert [a.shape for a in fast] == [b.shape for b in slow]
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a, b, atol=1e-5)
        assert all(np.all(a < 0) for a in fast)


def test_shared_prefix_runs_once(tiny_llama):
    lm = load_language_model(str(tiny_llama), device="cpu")
    contexts, continuations = direct_requests()
    loglikelihood(lm, contexts, continuations)
    shared = lm.cost.tokens
    lm.cost.tokens = 0
    loglikelihood_unbatched(lm, contexts, continuations)
    assert shared < 0.6 * lm.cost.tokens  # 3 options per context: the context runs once, not 3 times


def test_truncation_cuts_the_context_from_the_left_never_the_continuation(tiny_llama):
    lm = load_language_model(str(tiny_llama), device="cpu", max_length=12)
    long_input = "the plot " * 40
    scores = loglikelihood(lm, [long_input + "\nAnswer:"], [" very mixed feelings"])
    assert scores[0].shape == (3,)  # every token of the option is scored
    short = loglikelihood(lm, ["the plot " * 3 + "\nAnswer:"], [" very mixed feelings"])
    # the kept context is the end of the input, so the scores equal those of a context that is only that end
    np.testing.assert_allclose(scores[0], loglikelihood_unbatched(lm, [long_input + "\nAnswer:"],
                                                                  [" very mixed feelings"])[0], atol=1e-5)
    assert not np.allclose(scores[0], short[0])
    with pytest.raises(ConfigError, match="continuation alone"):
        loglikelihood(lm, ["x"], [" word" * 20])


def test_an_encoder_without_lm_head_is_refused(tiny_bert):
    with pytest.raises(CheckpointError, match="language-model head|generative LM"):
        load_language_model(str(tiny_bert), device="cpu")


def test_without_logits_by_mask_every_position_is_computed_then_the_scored_ones_kept(tiny_llama, monkeypatch):
    from upcycle.scoring import loglikelihood as module

    lm = load_language_model(str(tiny_llama), device="cpu")
    contexts, continuations, groups = flipped_requests()
    fast = loglikelihood(lm, contexts, continuations, groups=groups)
    monkeypatch.setattr(module, "_keeps_logits_by_mask", lambda: False)  # an older transformers
    fallback = loglikelihood(lm, contexts, continuations, groups=groups)
    for a, b in zip(fast, fallback):
        np.testing.assert_allclose(a, b, atol=1e-6)
