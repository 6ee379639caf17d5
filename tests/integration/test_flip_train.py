"""``flip_train`` and ``upcycle flip-train`` on tiny random Llamas: the first step's loss is the objective computed
from the scorer's own log-probabilities, training teaches a toy task in both directions, an interrupted run resumes
to the same weights, and the result enters the zoo with its lineage."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from upcycle.checkpoints import load_tokenizer, resolve_checkpoint
from upcycle.cli import app
from upcycle.errors import CheckpointError, ConfigError
from upcycle.scoring import flip_train, score
from upcycle.scoring import flip_training as module
from upcycle.scoring.flip_training import (
    STATE_SUFFIX,
    example_requests,
    step_examples,
    training_prompts,
    wrong_options,
)
from upcycle.scoring.loglikelihood import load_language_model, loglikelihood_unbatched
from upcycle.scoring.methods import METHODS
from upcycle.tasks import load_task, template_for

CUES = {0: "terrible", 1: "excellent"}
FILLER = ["the", "movie", "film", "plot", "was", "really", "quite", "and"]


def cue_rows(count: int, seed: int) -> list[dict]:
    """Two classes, told apart by one cue word among filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 3) + [CUES[label]]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory) -> Path:
    """A canonical dataset folder (the layout of ../shared/datasets); its default template's instruction is
    'Classify this text. Answer with one of: negative, positive.'"""
    folder = tmp_path_factory.mktemp("data") / "toy_cues"
    folder.mkdir()
    card = {"name": "toy_cues", "task": "classification", "inputs": ["text"],
            "label_names": ["negative", "positive"]}
    (folder / "dataset.json").write_text(json.dumps(card))
    for split, count, seed in (("train", 64, 1), ("validation", 8, 2), ("test", 16, 3)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in cue_rows(count, seed)))
    return folder


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory) -> Path:
    """conftest's tiny Llama, initialised with std 0.5 instead of 0.02. LoRA leaves the (tied) output layer and
    the final norm frozen; with 0.02-sized embeddings every logit stays below ~0.6 whatever the adapters do, so no
    token could become likely. Pretrained models have no such limit; this one lets adapters learn in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("wide-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0,
        initializer_range=0.5)).save_pretrained(folder)
    load_tokenizer(resolve_checkpoint("minilm")).save_pretrained(folder)
    return folder


def prefers_gold(model: Path, task: Path, method: str) -> float:
    """The share of train examples whose gold option the model's ``method`` scores above the other option:
    P(I | x, y+) > P(I | x, y-) for flipped, P(y+ | I, x) > P(y- | I, x) for direct."""
    loaded = load_task(task)
    prompts = template_for(loaded).prompts(loaded.splits["train"])
    requests = [r for p in prompts for r in METHODS.get(method).requests(p)]
    lm = load_language_model(str(model), device="cpu")
    logprobs = lm.loglikelihood([c for c, _ in requests], [y for _, y in requests])
    scores = np.array([lp.sum() for lp in logprobs]).reshape(len(prompts), 2)
    return float((scores.argmax(axis=1) == np.array([p.label for p in prompts])).mean())


def log_one_minus_exp(logprobs: np.ndarray) -> np.ndarray:
    return np.log(-np.expm1(logprobs))


@pytest.mark.parametrize("objective", ["flipped", "direct"])
def test_the_first_loss_is_the_objective_on_the_scorers_log_probabilities(objective, tiny_llama, toy_task,
                                                                          tmp_path):
    """LoRA starts as the identity (B = 0), so step 1's loss is the objective on the base model: rebuilt here from
    the unbatched scoring reference, over the same examples, rows and tokens."""
    result = flip_train(str(tiny_llama), [toy_task], tmp_path / "out", objective=objective, steps=1, batch_size=4,
                        unlikelihood_weight=0.7, seed=5, device="cpu")
    prompts = training_prompts([load_task(toy_task)], 500, seed=5)
    rows = [row for i in step_examples(len(prompts), 0, 4, seed=5)
            for row in example_requests(prompts[i], objective, wrong_options(prompts[i], 4, 5, 0, i))]
    lm = load_language_model(str(tiny_llama), device="cpu")
    logprobs = loglikelihood_unbatched(lm, [r[0] for r in rows], [r[1] for r in rows])
    gold = np.concatenate([lp for lp, r in zip(logprobs, rows) if r[2]])
    expected = -gold.mean()
    if objective == "flipped":
        wrong = np.concatenate([lp for lp, r in zip(logprobs, rows) if not r[2]])
        expected += 0.7 * -log_one_minus_exp(wrong).mean()
        assert len(rows) == 8  # 4 examples x (gold + 1 wrong option)
    assert result.loss_curve[0] == pytest.approx(expected, rel=1e-4)
    encode = lm.tokenizer
    assert result.tokens == sum(len(encode(c, add_special_tokens=False).input_ids)
                                + len(encode(y, add_special_tokens=False).input_ids) for c, y, _ in rows)


def test_flipped_training_teaches_the_instruction_given_the_right_label_and_registers_the_model(
        wide_llama, toy_task, tmp_path, store):
    before = prefers_gold(wide_llama, toy_task, "flipped")
    result = flip_train(str(wide_llama), [toy_task], tmp_path / "flipped", steps=60, learning_rate=3e-2,
                        device="cpu", store=store)
    curve = np.array(result.loss_curve)
    assert len(curve) == 60 and result.steps == 60 and result.resumed_from is None
    assert curve[-5:].mean() < 0.2 * curve[:5].mean()
    after = prefers_gold(Path(result.checkpoint), toy_task, "flipped")
    assert before <= 0.75 and after >= 0.9 and after - before >= 0.25
    # the saved folder is an ordinary model (adapters merged) that the scorer reads, also on unseen examples
    saved = Path(result.checkpoint)
    assert not (saved / "adapter_config.json").exists() and (saved / "model.safetensors").exists()
    (test,) = score(toy_task, str(saved), method="flipped", device="cpu")
    assert test.accuracy >= 0.9
    provenance = json.loads((saved / "upcycle.json").read_text())
    base = resolve_checkpoint(wide_llama)
    assert provenance["base_fingerprint"] == base.fingerprint and provenance["task"] == "flip:toy_cues"
    assert provenance["flip_train"]["lora"]["target_modules"] == "all-linear"
    assert provenance["flip_train"]["unlikelihood_weight"] == 1.0 and provenance["tokens"] == result.tokens > 0
    entry = store.get_checkpoint(result.fingerprint)
    assert entry.name == result.zoo_name == "flipped"
    assert entry.base_fingerprint == base.fingerprint and entry.source_task == "flip:toy_cues"
    assert store.get_checkpoint(base.fingerprint) is not None


def test_direct_baseline_full_finetune_learns_the_label_given_instruction_and_input(tiny_llama, toy_task, tmp_path):
    before = prefers_gold(tiny_llama, toy_task, "direct")
    result = flip_train(str(tiny_llama), [toy_task], tmp_path / "direct", objective="direct", lora=False, steps=40,
                        learning_rate=1e-2, device="cpu")
    curve = np.array(result.loss_curve)
    assert curve[-5:].mean() < 0.2 * curve[:5].mean()
    after = prefers_gold(Path(result.checkpoint), toy_task, "direct")
    assert before <= 0.75 and after >= 0.9
    arguments = json.loads((Path(result.checkpoint) / "upcycle.json").read_text())["flip_train"]
    assert arguments["lora"] is None and arguments["unlikelihood_weight"] is None


@pytest.mark.parametrize("objective", ["flipped", "direct"])
def test_passes_cut_by_length_train_the_same_weights_as_one_pass_per_step(objective, wide_llama, toy_task,
                                                                           tmp_path, monkeypatch):
    """micro_batch_tokens only changes how a step's rows are run: every row alone (budget 1) sums the same loss
    and gradient as one padded pass over the step, so the curves and the trained weights agree. (LoRA dropout is
    off here: its masks are drawn per pass, so with it on the runs agree in distribution, not to the digit.)"""
    monkeypatch.setitem(module.LORA, "dropout", 0.0)
    options = dict(objective=objective, steps=6, batch_size=4, learning_rate=1e-2, device="cpu", seed=3)
    whole = flip_train(str(wide_llama), [toy_task], tmp_path / "one-pass", micro_batch_tokens=None, **options)
    rowwise = flip_train(str(wide_llama), [toy_task], tmp_path / "row-by-row", micro_batch_tokens=1, **options)
    np.testing.assert_allclose(rowwise.loss_curve, whole.loss_curve, rtol=1e-5)
    assert rowwise.tokens == whole.tokens
    first = load_file(Path(whole.checkpoint) / "model.safetensors")
    second = load_file(Path(rowwise.checkpoint) / "model.safetensors")
    for name in first:
        np.testing.assert_allclose(second[name], first[name], atol=1e-5, err_msg=name)
    with pytest.raises(ConfigError, match="micro_batch_tokens must be at least 1"):
        flip_train(str(wide_llama), [toy_task], tmp_path / "bad", micro_batch_tokens=0, **options)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("lora", [True, False])
def test_an_interrupted_run_resumes_to_the_same_weights_and_a_finished_one_is_returned(lora, wide_llama, toy_task,
                                                                                      tmp_path, monkeypatch):
    options = dict(steps=12, batch_size=4, save_every=5, learning_rate=1e-2 if lora else 3e-3, lora=lora,
                   device="cpu", seed=2)
    whole = flip_train(str(wide_llama), [toy_task], tmp_path / "whole", **options)

    def stop_at_step_7(phase, done, total):
        if done == 7:
            raise Interrupted

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        flip_train(str(wide_llama), [toy_task], out, progress=stop_at_step_7, **options)
    state = out.with_name(out.name + STATE_SUFFIX)
    assert not out.exists() and json.loads((state / "state.json").read_text())["step"] == 5
    with pytest.raises(ConfigError, match=r"other arguments \(learning_rate\)"):
        flip_train(str(wide_llama), [toy_task], out, **{**options, "learning_rate": 5e-3})

    resumed = flip_train(str(wide_llama), [toy_task], out, **options)
    assert resumed.resumed_from == 5 and not state.exists()
    np.testing.assert_allclose(resumed.loss_curve, whole.loss_curve, rtol=1e-5)
    assert len(resumed.loss_curve) == 12 and resumed.tokens == whole.tokens
    first, second = load_file(Path(whole.checkpoint) / "model.safetensors"), load_file(out / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_allclose(second[name], first[name], atol=1e-6, err_msg=name)

    monkeypatch.setattr(module, "_Run", None)  # a finished folder is returned without building a run
    again = flip_train(str(wide_llama), [toy_task], out, **options)
    assert again.reused and again.fingerprint == resumed.fingerprint and again.loss_curve == resumed.loss_curve
    with pytest.raises(CheckpointError, match="already exists and holds a flip-train result with other steps"):
        flip_train(str(wide_llama), [toy_task], out, **{**options, "steps": 13})


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False, env={"COLUMNS": "200"})


def test_cli_trains_registers_and_returns_a_finished_run(tiny_llama, toy_task, tmp_path):
    db, out = tmp_path / "cli.db", tmp_path / "flipped-toy"
    args = ["flip-train", "--model", tiny_llama, "--tasks", toy_task, "--out", out, "--steps", "3", "--batch-size",
            "2", "--db", db]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert f"saved to {out}" in first.output and "zoo name flipped-toy" in first.output
    assert "loss " in first.output and "tokens/s" in first.output
    second = invoke(*args)
    assert second.exit_code == 0 and "nothing trained" in second.output


def test_cli_errors_are_one_line_with_exit_2(tiny_llama, tiny_t5, toy_task, shared_data, tmp_path):
    db = tmp_path / "cli.db"
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    cases = [
        (["--model", tiny_llama, "--tasks", tmp_path / "missing.csv", "--out", tmp_path / "a"], "not found"),
        (["--model", tiny_llama, "--tasks", shared_data / "stsb", "--out", tmp_path / "b"], "regression"),
        (["--model", tiny_llama, "--tasks", toy_task, "--out", taken], "already exists"),
        (["--model", tiny_t5, "--tasks", toy_task, "--out", tmp_path / "c"], "supports causal LMs"),
        (["--model", tiny_llama, "--tasks", toy_task, "--out", tmp_path / "d", "--objective", "channel"],
         "--objective must be"),
    ]
    for options, message in cases:
        result = invoke("flip-train", *options, "--steps", "1", "--db", db)
        assert result.exit_code == 2, (options, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    assert (taken / "notes.txt").read_text() == "mine"
    assert list(tmp_path.glob("cli.db*")) == []  # a failed command leaves no database behind


def test_a_stale_quantizer_is_dropped_and_really_quantized_weights_are_refused(tiny_llama):
    """The smollm2 cache's config keeps the GGUF file's quantization_config over plain fp32 weights; transformers
    then refuses to save the model. flip-train drops such a quantizer, and refuses weights that are quantized."""
    import torch
    from transformers import AutoModelForCausalLM

    class Quantizer:
        quantization_config = type("Config", (), {"quant_method": "gguf"})()

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.hf_quantizer, model.config.quantization_config = Quantizer(), {"quant_method": "gguf"}
    plain = module._plain(model, "tiny")
    assert plain.hf_quantizer is None and "quantization_config" not in plain.config.to_dict()
    model.hf_quantizer = Quantizer()
    model.packed_weight = torch.nn.Parameter(torch.zeros(2, dtype=torch.uint8), requires_grad=False)
    with pytest.raises(ConfigError, match="quantized \\(gguf\\) and cannot be trained"):
        module._plain(model, "tiny")
