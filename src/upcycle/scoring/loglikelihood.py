"""The one primitive of zero-shot scoring: the log-probability of each continuation token given its context.

``loglikelihood(lm, contexts, continuations, groups=...)`` returns, per request, the log-probabilities of the
continuation's tokens (shape ``(len(continuation tokens),)``). Every scoring method (direct, channel, flipped) is
a small function over it. What makes it fast on a CPU, measured in ``benchmarks/scoring_speed.py`` against one full
forward pass per request:

* **shared prefixes are encoded once.** The requests of one group (the label options of one example) share a
  token prefix: the whole context for DIRECT, the input for FLIPPED. It runs once; its key/value cache is then
  repeated for each option, and only the part after it (the option, and for FLIPPED the instruction) runs per
  option.
* **logits only where they are scored.** The output layer (49k words for SmolLM2) is the largest single matrix
  product; it is applied only at the positions that predict continuation tokens (transformers'
  ``logits_to_keep`` with a boolean mask), not at every position of the context.
* **batched by length.** Groups are sorted by length and packed up to a token budget, so padding stays small and
  the matrix products are large enough to use the cores.

Padding is always on the right, with explicit position ids, so no query row is ever fully masked (left padding
makes NaN keys and values in some attention kernels). Inputs longer than the model allows are cut from the left
of the context, so the scored continuation (a label, or for FLIPPED the instruction) is never cut.
Seq2seq models (T5) encode each distinct context once and decode every continuation against it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoints import load_language_model as load_model
from ..checkpoints import load_tokenizer, resolve_checkpoint
from ..errors import ConfigError
from ..training.devices import bf16_autocast, prepare_device, resolve_device

DEFAULT_BATCH_TOKENS = 2048  # tokens per forward pass (rows x padded length); larger gains little on 2 cores
LOGITS_BUDGET_BYTES = 256 << 20  # the (positions x vocabulary) fp32 logits of one pass stay under this


@dataclass
class Cost:
    """What scoring cost: tokens through the model (each prefix counted once) and wall seconds."""

    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LanguageModel:
    """A loaded generative LM ready to score: the transformers model, its tokenizer and how to run it.

    Attributes:
        model: a causal (``*ForCausalLM``) or seq2seq (``*ForConditionalGeneration``) model in eval mode.
        tokenizer: its tokenizer.
        is_seq2seq: True for encoder-decoder models.
        device: torch device string (``cpu``, ``cuda:0``).
        precision: ``fp32``, or ``bf16`` (autocast; log-softmax stays fp32).
        max_length: the longest context + continuation, in tokens, fed to the model.
        name: display name; ``fingerprint``: the weights' sha256 (the store's key).
    """

    model: Any
    tokenizer: Any
    is_seq2seq: bool
    device: str = "cpu"
    precision: str = "fp32"
    max_length: int = 1024
    name: str = ""
    fingerprint: str = ""
    cost: Cost = field(default_factory=Cost)

    def loglikelihood(self, contexts: Sequence[str], continuations: Sequence[str], *,
                      groups: Sequence[int] | None = None, progress: Callable[[int], None] | None = None
                      ) -> list[np.ndarray]:
        return loglikelihood(self, contexts, continuations, groups=groups, progress=progress)


def load_language_model(reference: str, *, device: str | None = "auto", precision: str = "fp32",
                        max_length: int | None = None, allow_pickle: bool = False) -> LanguageModel:
    """Resolve ``reference`` (``smollm2``, a folder, a hub id) and load it for scoring on ``device``."""
    import torch  # lazy: torch stays off the CLI's --help path

    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be fp32 or bf16, not '{precision}'.")
    checkpoint = resolve_checkpoint(reference, allow_pickle=allow_pickle)
    model, is_seq2seq = load_model(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    resolved = resolve_device(device)
    prepare_device(resolved)
    model.to(torch.device(resolved))
    limit = _model_max_length(model.config, is_seq2seq)
    if max_length is not None and max_length < 2:
        raise ConfigError(f"max_length must be at least 2 tokens, not {max_length}.")
    return LanguageModel(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq, device=resolved,
                         precision=precision, max_length=min(max_length or limit, limit), name=checkpoint.name,
                         fingerprint=checkpoint.fingerprint)


def _model_max_length(config: Any, is_seq2seq: bool) -> int:
    """Positions the model supports, capped at 2048: longer contexts cost quadratically and help little here."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return min(value, 2048)
    return 512 if is_seq2seq else 2048


@dataclass(frozen=True)
class _Request:
    index: int
    context: list[int]
    continuation: list[int]

    @property
    def full(self) -> list[int]:
        return self.context + self.continuation


def loglikelihood(lm: LanguageModel, contexts: Sequence[str], continuations: Sequence[str], *,
                  groups: Sequence[int] | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                  progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Per request ``i``, the log-probabilities of ``continuations[i]``'s tokens after ``contexts[i]``.

    Args:
        contexts, continuations: ``n`` strings each; the continuation's tokens are scored.
        groups: ``n`` group ids; requests of one group (one example's options) share their common prefix's
            computation. By default requests with the same context form a group.
        batch_tokens: rows x padded length per forward pass.
        progress: called with the number of requests finished by each pass.

    Returns:
        ``n`` float64 arrays, array ``i`` of shape ``(len(tokens of continuations[i]),)``.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations.")
    if groups is None:
        ids: dict[str, int] = {}
        groups = [ids.setdefault(context, len(ids)) for context in contexts]
    requests = _encode(lm, contexts, continuations)
    started = time.perf_counter()
    run = _run_seq2seq if lm.is_seq2seq else _run_causal
    results = run(lm, requests, list(groups), batch_tokens, progress)
    lm.cost.seconds += time.perf_counter() - started
    return [results[i] for i in range(len(requests))]


def _encode(lm: LanguageModel, contexts: Sequence[str], continuations: Sequence[str]) -> list[_Request]:
    """Token ids; the context gets the model's start tokens, and is cut from the left to fit ``max_length``."""
    tokenizer = lm.tokenizer
    if lm.is_seq2seq:  # the encoder reads the context with its special tokens; the decoder the continuation
        context_ids = tokenizer(list(contexts), add_special_tokens=True).input_ids
    else:
        context_ids = [_starts(tokenizer) + ids
                       for ids in tokenizer(list(contexts), add_special_tokens=False).input_ids]
    continuation_ids = tokenizer(list(continuations), add_special_tokens=False).input_ids
    requests = []
    for index, (context, continuation) in enumerate(zip(context_ids, continuation_ids)):
        if not continuation:
            raise ConfigError(f"Request {index}: the continuation {continuations[index]!r} has no tokens to score.")
        room = lm.max_length - (0 if lm.is_seq2seq else len(continuation))
        if room < 1:
            raise ConfigError(
                f"Request {index}: the continuation alone is {len(continuation)} tokens, more than the "
                f"{lm.max_length} the model reads; raise --max-length or shorten the instruction or input.")
        if not context:  # nothing to condition on: the end-of-text token stands for "start of a document"
            context = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
        requests.append(_Request(index, context[-room:], continuation))
    return requests


def _starts(tokenizer: Any) -> list[int]:
    """The token a causal tokenizer puts before a document (Llama's BOS), if it adds one."""
    if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None:
        return [tokenizer.bos_token_id]
    return []


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _shared_prefix(members: list[_Request]) -> int:
    """Tokens the members share and that can run once: their common prefix, stopping one token before the
    shortest context so that every scored position is computed in the per-member pass."""
    first = members[0].full
    length = min(len(m.context) for m in members) - 1
    for member in members[1:]:
        full = member.full
        common = 0
        while common < length and full[common] == first[common]:
            common += 1
        length = common
    return max(length, 0)


def _batches(units: list[tuple[int, list[_Request]]], batch_tokens: int, vocab: int) -> list[list]:
    """Pack ``(prefix length, members)`` units, sorted by length, under the token and logits budgets.

    Units with and without a shared prefix never mix: a row with an empty prefix would be a fully masked
    query row in the prefix pass.
    """
    units = sorted(units, key=lambda unit: (unit[0] > 0, unit[0], max(len(m.full) for m in unit[1])))
    max_positions = max(1, LOGITS_BUDGET_BYTES // (4 * vocab))
    batches: list[list] = []
    current: list = []
    for unit in units:
        trial = current + [unit]
        prefix = max(p for p, _ in trial)
        rows = [(p, m) for p, members in trial for m in members]
        suffix = max(len(m.full) - p for p, m in rows)
        scored = sum(len(m.continuation) for _, m in rows)
        mixed = current and (current[0][0] > 0) != (unit[0] > 0)
        fits = len(trial) * prefix <= batch_tokens and len(rows) * suffix <= batch_tokens and scored <= max_positions
        if current and (mixed or not fits):
            batches.append(current)
            current = [unit]
        else:
            current = trial
    if current:
        batches.append(current)
    return batches


def _run_causal(lm: LanguageModel, requests: list[_Request], groups: list[int], batch_tokens: int,
                progress: Callable[[int], None] | None) -> dict[int, np.ndarray]:
    import torch  # lazy: torch stays off the CLI's --help path

    members: dict[int, list[_Request]] = {}
    for request, group in zip(requests, groups):
        members.setdefault(group, []).append(request)
    units = [(_shared_prefix(group), group) for group in members.values()]
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    parameters = inspect.signature(lm.model.forward).parameters
    keeps_logits = "logits_to_keep" in parameters and _keeps_logits_by_mask()
    cache_argument = "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5.x
    device = torch.device(lm.device)
    pad = _pad_id(lm.tokenizer)
    results: dict[int, np.ndarray] = {}
    with torch.inference_mode(), bf16_autocast(lm.device, lm.precision == "bf16"):
        for batch in _batches(units, batch_tokens, vocab):
            rows = [(unit_index, prefix, member) for unit_index, (prefix, unit) in enumerate(batch) for member in unit]
            cache, prefix_mask = None, None
            if batch[0][0] > 0:  # one pass over the shared prefixes, then their cache repeated per member
                prefixes = [unit[0].full[:prefix] for prefix, unit in batch]
                ids, prefix_mask = _right_padded(prefixes, pad, device)
                kwargs = {"logits_to_keep": 1} if keeps_logits else {}
                out = lm.model(input_ids=ids, attention_mask=prefix_mask, use_cache=True, **kwargs)
                lm.cost.tokens += sum(len(p) for p in prefixes)
                cache = getattr(out, "cache", None) or out.past_key_values
                owner = torch.tensor([unit_index for unit_index, _, _ in rows], device=device)
                cache.reorder_cache(owner)
                prefix_mask = prefix_mask.index_select(0, owner)
            suffixes = [member.full[prefix:] for _, prefix, member in rows]
            ids, mask = _right_padded(suffixes, pad, device)
            starts = torch.tensor([prefix for _, prefix, _ in rows], device=device)
            positions = starts[:, None] + torch.arange(ids.shape[1], device=device)[None, :]
            keep = torch.zeros_like(mask, dtype=torch.bool)
            for row, (_, prefix, member) in enumerate(rows):  # positions that predict a continuation token
                first = len(member.context) - 1 - prefix
                keep[row, first:first + len(member.continuation)] = True
            attention = mask if prefix_mask is None else torch.cat([prefix_mask, mask], dim=1)
            kwargs = {"logits_to_keep": keep} if keeps_logits else {}
            if cache is not None:
                kwargs[cache_argument] = cache
            logits = lm.model(input_ids=ids, attention_mask=attention, position_ids=positions,
                              use_cache=cache is not None, **kwargs).logits
            if logits.dim() == 3:  # the model computed every position: keep the scored ones
                logits = logits[keep]
            lm.cost.tokens += sum(len(s) for s in suffixes)
            targets = torch.tensor([t for _, _, m in rows for t in m.continuation], device=device)
            picked = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
            results.update(_per_request(picked, [member for _, _, member in rows]))
            if progress is not None:
                progress(len(rows))
    return results


def _run_seq2seq(lm: LanguageModel, requests: list[_Request], groups: list[int], batch_tokens: int,
                 progress: Callable[[int], None] | None) -> dict[int, np.ndarray]:
    """Each distinct context is encoded once; every continuation of it is decoded against that encoding."""
    import torch  # lazy: torch stays off the CLI's --help path

    by_context: dict[tuple[int, ...], list[_Request]] = {}
    for request in requests:
        by_context.setdefault(tuple(request.context), []).append(request)
    units = [(len(context), members) for context, members in by_context.items()]
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    device = torch.device(lm.device)
    pad = _pad_id(lm.tokenizer)
    results: dict[int, np.ndarray] = {}
    encoder = lm.model.get_encoder()
    with torch.inference_mode(), bf16_autocast(lm.device, lm.precision == "bf16"):
        for batch in _batches([(1, members) for _, members in units], batch_tokens, vocab):
            contexts = [members[0].context for _, members in batch]
            ids, mask = _right_padded(contexts, pad, device)
            encoded = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            owner = torch.tensor([u for u, (_, members) in enumerate(batch) for _ in members], device=device)
            rows = [member for _, members in batch for member in members]
            labels, label_mask = _right_padded([m.continuation for m in rows], -100, device)
            decoder_inputs = lm.model.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = lm.model(encoder_outputs=(encoded.index_select(0, owner),),
                              attention_mask=mask.index_select(0, owner),
                              decoder_input_ids=decoder_inputs).logits
            lm.cost.tokens += sum(len(c) for c in contexts) + sum(len(m.continuation) for m in rows)
            keep = label_mask.bool()
            picked = torch.log_softmax(logits[keep].float(), dim=-1).gather(1, labels[keep][:, None])[:, 0]
            results.update(_per_request(picked, rows))
            if progress is not None:
                progress(len(rows))
    return results


def _per_request(picked: Any, members: list[_Request]) -> dict[int, np.ndarray]:
    """Split the scored tokens' log-probs ``(sum of continuation lengths,)``, laid out member after member, into
    one float64 array per request index."""
    values = picked.double().cpu().numpy()
    ends = np.cumsum([len(member.continuation) for member in members])
    return {member.index: values[end - len(member.continuation):end] for member, end in zip(members, ends)}


def _keeps_logits_by_mask() -> bool:
    """Whether this transformers accepts a boolean ``(rows, positions)`` mask as ``logits_to_keep`` (the helper
    that implements it came with that form); older versions get every position's logits, then the kept ones."""
    from transformers import modeling_utils  # lazy: transformers is slow to import

    return hasattr(modeling_utils, "slice_logits_to_keep")


def _right_padded(sequences: list[list[int]], pad: int, device: Any):
    """``(ids, mask)``: a ``(rows, longest)`` long tensor padded on the right, and its 0/1 attention mask."""
    import torch  # lazy: torch stays off the CLI's --help path

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, :len(sequence)] = 1
    return ids.to(device), mask.to(device)


def loglikelihood_unbatched(lm: LanguageModel, contexts: Sequence[str], continuations: Sequence[str]
                            ) -> list[np.ndarray]:
    """The reference: one full forward pass per request, logits at every position, as written by hand.

    This is what lm-evaluation-harness does for a causal model and the anchor of ``benchmarks/scoring_speed.py``;
    tests hold :func:`loglikelihood` to it. Same tokenization and truncation as :func:`loglikelihood`.
    """
    import torch  # lazy: torch stays off the CLI's --help path

    device = torch.device(lm.device)
    results = []
    started = time.perf_counter()
    with torch.inference_mode(), bf16_autocast(lm.device, lm.precision == "bf16"):
        for request in _encode(lm, contexts, continuations):
            target = torch.tensor(request.continuation, device=device)
            if lm.is_seq2seq:
                context = torch.tensor([request.context], device=device)
                logits = lm.model(input_ids=context, labels=target[None, :]).logits[0]
                lm.cost.tokens += len(request.context) + len(request.continuation)
            else:
                full = torch.tensor([request.full], device=device)
                logits = lm.model(input_ids=full).logits[0, len(request.context) - 1:-1]
                lm.cost.tokens += len(request.full)
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(1, target[:, None])[:, 0]
            results.append(logprobs.double().cpu().numpy())
    lm.cost.seconds += time.perf_counter() - started
    return results
