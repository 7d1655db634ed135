"""Generation loops on a causal LM, one home for every caller: KV-cached, one forward per new token.

``token_loop`` yields one stream's tokens one by one with the hidden states of the forward that read each
(generated token ``i`` is fed to the model in forward ``i``, with the cache of everything before it; that
single forward yields token ``i``'s hidden states for a probe and the logits for token ``i + 1``), so a
caller can check every token before the next is made: the guard's local token source. ``generate_batch``
runs many prompts at once (left padding) and ``generate_texts`` wraps it for user prompts in, text out
(corpus generation, unguarded baselines). ``prefill`` reads a prompt ahead of the loop (the guard reads the
prompt's states there before its input check). Both sample with ``Sampler``: greedy, or temperature / top-k /
top-p with an optional seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from constitutional_guard.models.loading import new_kv_cache

GREEDY_BELOW_TEMPERATURE = 1e-5
"""Temperatures under this are greedy in effect, and dividing logits by them can overflow to NaN probabilities."""


class Decoding(Protocol):
    """What the loops read of a generation config (``guard.events.GenerationConfig`` is one)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    ignore_eos: bool


@dataclass(frozen=True)
class Greedy:
    """Greedy decoding of up to ``max_new_tokens`` tokens, stopping at end-of-sequence."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class Step:
    """One generated token and the hidden states of the forward that read it."""

    index: int
    token_id: int
    hidden_states: tuple[torch.Tensor, ...] | None
    """HF hidden-states tuple, each ``[1, 1, hidden]``; None for an end-of-sequence token (never fed)."""
    eos: bool = False


class Sampler:
    """Greedy or temperature / top-k / top-p sampling with an optional seed, via transformers' warpers."""

    def __init__(self, config: Decoding, device: torch.device):
        self.greedy = config.temperature < GREEDY_BELOW_TEMPERATURE
        warpers: list[Any] = []
        if not self.greedy:
            if config.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k > 0:
                warpers.append(TopKLogitsWarper(config.top_k))
            if config.top_p < 1.0:
                warpers.append(TopPLogitsWarper(config.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.generator: torch.Generator | None = None
        if config.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``[batch, vocab]`` logits of the last position → ``[batch]`` next token ids."""
        if self.greedy:
            return logits.argmax(dim=-1)
        scores = self.warpers(None, logits.float())  # these warpers ignore the input ids
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


@dataclass
class Prefill:
    """A prompt read: the logits of the first token, the KV cache the forward filled and, when asked for, the
    prompt's hidden states at some layers (``[tokens, hidden]`` per hidden-state index)."""

    prompt_ids: list[int]
    logits: torch.Tensor
    cache: dict[str, Any]
    states: dict[int, torch.Tensor]


@torch.inference_mode()
def prefill(model: Any, prompt_ids: Sequence[int], layers: Sequence[int] = ()) -> Prefill:
    """Read the prompt in one cached forward (``token_loop`` goes on from it), keeping its states at ``layers``."""
    ids = torch.tensor([list(prompt_ids)], device=model.device)
    cache = new_kv_cache(model)
    out = model(input_ids=ids, use_cache=True, output_hidden_states=bool(layers), **cache)
    states = {layer: out.hidden_states[layer][0] for layer in layers}
    return Prefill(list(prompt_ids), out.logits[:, -1, :], cache, states)


@torch.inference_mode()
def token_loop(
    model: Any,
    prompt_ids: Sequence[int],
    config: Decoding,
    eos_token_ids: Sequence[int] = (),
    forced_ids: Sequence[int] | None = None,
    output_hidden_states: bool = True,
    prefilled: Prefill | None = None,
) -> Iterator[Step]:
    """Yield generated tokens one by one, each with its hidden states, from one cached forward per token.

    ``forced_ids`` replays a given response instead of sampling (teacher forcing, for evaluation); the
    loop then ends after those tokens. ``prefilled``: the prompt already read (``prefill`` of ``prompt_ids``).
    The caller may stop early by closing the generator.
    """
    device = model.device
    sampler = Sampler(config, device)
    eos = set() if config.ignore_eos or forced_ids is not None else set(eos_token_ids)
    limit = config.max_new_tokens if forced_ids is None else min(config.max_new_tokens, len(forced_ids))
    if prefilled is not None and prefilled.prompt_ids != list(prompt_ids):
        raise ValueError("prefilled: read another prompt")
    read = prefilled if prefilled is not None else prefill(model, prompt_ids)
    logits, cache = read.logits, read.cache
    for index in range(limit):
        token = int(forced_ids[index]) if forced_ids is not None else int(sampler(logits)[0])
        if token in eos:
            yield Step(index, token, None, eos=True)
            return
        step_ids = torch.tensor([[token]], device=device)
        out = model(input_ids=step_ids, use_cache=True, output_hidden_states=output_hidden_states, **cache)
        logits = out.logits[:, -1, :]
        yield Step(index, token, out.hidden_states if output_hidden_states else None)


@dataclass
class BatchOutput:
    """One prompt's result from batched generation."""

    token_ids: list[int]
    scores: list[float]
    """Probe P(unsafe) per generated token (empty without a probe)."""


@torch.inference_mode()
def generate_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    config: Decoding,
    pad_token_id: int,
    eos_token_ids: Sequence[int] = (),
    probe: Any | None = None,
) -> list[BatchOutput]:
    """Generate for many prompts at once (left padding, KV cache), scoring every new token with ``probe``."""
    device = model.device
    sampler = Sampler(config, device)
    eos = torch.tensor([] if config.ignore_eos else list(eos_token_ids), device=device, dtype=torch.long)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), device=device)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_kv_cache(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **cache)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    results = [BatchOutput([], []) for _ in prompts]
    for _ in range(config.max_new_tokens):
        tokens = sampler(out.logits[:, -1, :])
        tokens = torch.where(done, torch.full_like(tokens, pad_token_id), tokens)
        done = done | torch.isin(tokens, eos)
        if bool(done.all()):
            break
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=probe is not None,
            **cache,
        )
        scores = probe.score_hidden_states(out.hidden_states)[:, -1].tolist() if probe is not None else None
        for row, result in enumerate(results):
            if not done[row]:
                result.token_ids.append(int(tokens[row]))
                if scores is not None:
                    result.scores.append(float(scores[row]))
    return results


def generate_texts(
    lm: Any, prompts: Sequence[str], config: Decoding, max_prompt_tokens: int | None = None
) -> list[str]:
    """Each prompt as a user turn of ``lm``'s chat template, answered in one batch; the decoded responses
    (special tokens dropped, whitespace stripped). ``max_prompt_tokens`` keeps only each prompt's last tokens."""
    ids = [lm.encode_messages([{"role": "user", "content": p}]) for p in prompts]
    if max_prompt_tokens is not None:
        ids = [row[-max_prompt_tokens:] for row in ids]
    outputs = generate_batch(lm.model, ids, config, lm.tokenizer.pad_token_id, lm.eos_token_ids)
    return [lm.tokenizer.decode(o.token_ids, skip_special_tokens=True).strip() for o in outputs]
