"""KV-cached token loop: one forward per new token, whose hidden states the probe reads.

Generated token ``i`` is fed to the model in forward ``i`` (with the cache of everything before it); that
single forward yields token ``i``'s hidden states for the probe and the logits for token ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from constitutional_guard.guard.events import GenerationConfig
from constitutional_guard.models.loading import new_kv_cache

REPLACEMENT_CHAR = "\ufffd"
GREEDY_BELOW_TEMPERATURE = 1e-5
"""Temperatures under this are greedy in effect, and dividing logits by them can overflow to NaN probabilities."""


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

    def __init__(self, config: GenerationConfig, device: torch.device):
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


@torch.inference_mode()
def token_loop(
    model: Any,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
    eos_token_ids: Sequence[int] = (),
    forced_ids: Sequence[int] | None = None,
    output_hidden_states: bool = True,
) -> Iterator[Step]:
    """Yield generated tokens one by one, each with its hidden states, from one cached forward per token.

    ``forced_ids`` replays a given response instead of sampling (teacher forcing, for evaluation); the
    loop then ends after those tokens. The caller may stop early by closing the generator.
    """
    device = model.device
    sampler = Sampler(config, device)
    eos = set() if config.ignore_eos or forced_ids is not None else set(eos_token_ids)
    limit = config.max_new_tokens if forced_ids is None else min(config.max_new_tokens, len(forced_ids))
    ids = torch.tensor([list(prompt_ids)], device=device)
    cache = new_kv_cache(model)
    out = model(input_ids=ids, use_cache=True, **cache)
    for index in range(limit):
        token = int(forced_ids[index]) if forced_ids is not None else int(sampler(out.logits[:, -1, :])[0])
        if token in eos:
            yield Step(index, token, None, eos=True)
            return
        step_ids = torch.tensor([[token]], device=device)
        out = model(input_ids=step_ids, use_cache=True, output_hidden_states=output_hidden_states, **cache)
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
    config: GenerationConfig,
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


def visible_end(text: str, stops: Sequence[str]) -> tuple[int, bool]:
    """How much of ``text`` can be shown: up to the first stop string (then True), else all but an
    unfinished character or a tail that could be the start of a stop string."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return min(hits), True
    end = len(text)
    while end > 0 and text[end - 1] == REPLACEMENT_CHAR:
        end -= 1
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end -= size
                break
    return end, False


class ResponseText:
    """The response's token ids and text, with stop strings applied."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.token_ids: list[int] = []
        self.stopped = False

    def __len__(self) -> int:
        return len(self.token_ids)

    def append(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        if self.stops:
            self.stopped = visible_end(self.decode(len(self.token_ids)), self.stops)[1]

    def decode(self, num_tokens: int) -> str:
        return self.tokenizer.decode(self.token_ids[:num_tokens], skip_special_tokens=True)

    def text_through(self, num_tokens: int, final: bool = False) -> str:
        """Showable text of the first ``num_tokens`` tokens; ``final`` means no more tokens will come."""
        text = self.decode(num_tokens)
        end, found = visible_end(text, self.stops)
        if final and not found:
            end = len(text)
        return text[:end]

    def token_text(self, index: int) -> str:
        return self.tokenizer.decode([self.token_ids[index]], skip_special_tokens=False)
