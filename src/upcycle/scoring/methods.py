"""Scoring methods: how the score of each label option is read from a language model.

A method turns a :class:`~upcycle.tasks.Prompt` (instruction I, input x, options y_1..y_K) into one
``(context, continuation)`` request per option; the option's score is the log-likelihood of the continuation,
reduced by a normalisation and optionally calibrated. All of it is pure: a method never loads a model, it is
given a ``loglik(contexts, continuations, groups) -> per-token log-probs`` function (the real primitive, or a
fake with hand-set values in the tests).

* ``direct``  P(y | I, x): the usual zero-shot classifier (lm-evaluation-harness's multiple choice).
* ``channel`` P(I, x | y): the noisy channel of Min et al. (2022), with the instruction in the scored text.
* ``channel-input`` P(x | y): the channel without the instruction.
* ``flipped`` P(I | x, y): Flipped Learning (Ye et al., 2023): the option that makes the instruction most likely.

Normalisations of the per-token log-probs (which one is right depends on the task and the references disagree):
``sum`` (lm-eval ``acc``), ``token`` (the mean per token: Channel-LM-Prompting's mean loss), ``char`` (the sum
over the continuation's characters: lm-eval ``acc_norm``) and ``byte`` (over its UTF-8 bytes).

Calibrations subtract from each option's score the same method's score of that option on an input with no
content, computed once per task: ``content-free`` uses the input "N/A" (Zhao et al., 2021, contextual
calibration: in log space, dividing the option probabilities by their content-free ones), ``pmi`` the empty input,
so the score becomes log P(y | I, x) - log P(y | I) for ``direct`` (Holtzman et al., 2021, domain-conditional PMI
with the instruction as the domain premise). The channel methods score the input itself, so ``pmi`` (an empty
input) is undefined for them and refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..registry import Registry
from ..tasks.prompts import Prompt

LogLikelihood = Callable[[Sequence[str], Sequence[str], Sequence[int]], list[np.ndarray]]
"""``(contexts, continuations, groups) -> per-token log-probs``: one float array per request."""

ANSWER = "Answer:"
INSTRUCTION = "Instruction:"
CONTENT_FREE_INPUT = "N/A"


@dataclass(frozen=True)
class Method:
    """One scoring method: its name, the probability it reads, and its requests per option.

    ``requests(prompt)`` returns ``K`` pairs ``(context, continuation)``, one per option, in option order.
    ``scores_input``: True when the input is part of the scored continuation (channel methods).
    """

    name: str
    formula: str
    requests: Callable[[Prompt], list[tuple[str, str]]]
    scores_input: bool = False


METHODS: Registry[Method] = Registry("scoring method", hint=" (or 'all')")


def _direct(prompt: Prompt) -> list[tuple[str, str]]:
    return [(f"{prompt.instruction}\n{prompt.input}\n{ANSWER}", f" {option}") for option in prompt.options]


def _channel(prompt: Prompt) -> list[tuple[str, str]]:
    return [(f"{ANSWER} {option}\n", f"{prompt.instruction}\n{prompt.input}") for option in prompt.options]


def _channel_input(prompt: Prompt) -> list[tuple[str, str]]:
    return [(f"{ANSWER} {option}\n", prompt.input) for option in prompt.options]


def flipped_request(input_text: str, option: str, instruction: str) -> tuple[str, str]:
    """The FLIPPED request of one option; meta-training (:mod:`upcycle.scoring.flip_training`) uses the same."""
    return f"{input_text}\n{ANSWER} {option}\n{INSTRUCTION}", f" {instruction}"


def _flipped(prompt: Prompt) -> list[tuple[str, str]]:
    return [flipped_request(prompt.input, option, prompt.instruction) for option in prompt.options]


METHODS.register("direct", Method("direct", "P(y | I, x)", _direct))
METHODS.register("channel", Method("channel", "P(I, x | y)", _channel, scores_input=True))
METHODS.register("channel-input", Method("channel-input", "P(x | y)", _channel_input, scores_input=True))
METHODS.register("flipped", Method("flipped", "P(I | x, y)", _flipped))
ALL_METHODS = ("direct", "channel", "flipped")  # what --method all runs (channel-input on request)

NORMALIZATIONS: dict[str, Callable[[np.ndarray, str], float]] = {
    "sum": lambda logprobs, text: float(logprobs.sum()),
    "token": lambda logprobs, text: float(logprobs.mean()),
    "char": lambda logprobs, text: float(logprobs.sum()) / max(len(text), 1),
    "byte": lambda logprobs, text: float(logprobs.sum()) / max(len(text.encode("utf-8")), 1),
}
CALIBRATIONS = ("none", "content-free", "pmi")


def resolve_methods(names: str | Sequence[str]) -> list[Method]:
    """``"all"``, one name, a comma-separated string or a list -> the methods, each checked."""
    if isinstance(names, str):
        names = list(ALL_METHODS) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    return [METHODS.get(name) for name in names]


def check_options(method: Method, normalize: str, calibrate: str) -> None:
    """Refuse an unknown normalisation or calibration, and ``pmi`` for a method that scores the input."""
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"Unknown normalization '{normalize}'; known: {', '.join(NORMALIZATIONS)}.")
    if calibrate not in CALIBRATIONS:
        raise ConfigError(f"Unknown calibration '{calibrate}'; known: {', '.join(CALIBRATIONS)}.")
    if calibrate == "pmi" and method.scores_input:
        raise ConfigError(f"--calibrate pmi removes the input, which {method.name} scores ({method.formula}); "
                          "use --calibrate content-free or none with it.")


def option_scores(prompts: Sequence[Prompt], method: Method, loglik: LogLikelihood, *, normalize: str = "sum",
                  calibrate: str = "none") -> np.ndarray:
    """Scores of every option of every prompt: shape ``(len(prompts), K)``, higher is more likely.

    All prompts must have the same ``K`` options (one template). Requests of one prompt form one group, so the
    primitive encodes what they share once.
    """
    check_options(method, normalize, calibrate)
    if not prompts:
        return np.zeros((0, 0))
    width = len(prompts[0].options)
    if any(len(p.options) != width for p in prompts):
        raise ConfigError("All prompts of one scoring run must have the same number of options.")
    scores = _raw_scores(prompts, method, loglik, normalize)
    if calibrate != "none":
        empty = CONTENT_FREE_INPUT if calibrate == "content-free" else ""
        scores = scores - _raw_scores([replace(prompts[0], input=empty, label=None)], method, loglik, normalize)
    return scores


def _raw_scores(prompts: Sequence[Prompt], method: Method, loglik: LogLikelihood, normalize: str) -> np.ndarray:
    requests = [(context, continuation, index) for index, prompt in enumerate(prompts)
                for context, continuation in method.requests(prompt)]
    contexts, continuations, groups = zip(*requests)
    logprobs = loglik(list(contexts), list(continuations), list(groups))
    reduce = NORMALIZATIONS[normalize]
    flat = [reduce(lp, text) for lp, text in zip(logprobs, continuations)]
    return np.asarray(flat, dtype=np.float64).reshape(len(prompts), -1)


def accuracy_and_macro_f1(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """``{"accuracy", "macro_f1"}``. Macro-F1 averages the classes that occur in the labels or the predictions
    (scikit-learn's default), so a class the model never predicts counts with F1 0."""
    from sklearn.metrics import f1_score  # lazy: scikit-learn is slow to import

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return {"accuracy": float((labels == predictions).mean()) if len(labels) else 0.0,
            "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0))}
