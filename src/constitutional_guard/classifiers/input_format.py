"""Encoder inputs for prompts and exchanges that keep the response in view.

An exchange is encoded as a sentence pair ``[CLS] prompt [SEP] response [SEP]``; a prompt alone as a
single sequence. When the pair exceeds the window, the prompt is shortened first (its start and end
are kept, the middle elided); the response is cut only when it cannot fit beside ``min_prompt_tokens``
of prompt, and then also keeps its start and end, so the newest text being judged stays in view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from constitutional_guard.data.schema import Record

ELISION = " … "
MIN_PROMPT_TOKENS = 64
SLACK_TOKENS = 2
"""Re-tokenising text cut at a token boundary can add a token or two at the cut."""


@dataclass(frozen=True)
class FormattedInput:
    """Tokenised model input plus how much of each part was elided."""

    encoding: dict[str, list[int]]
    prompt_tokens_dropped: int
    response_tokens_dropped: int


def chat_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The text a classifier sees as the prompt: a lone message's content, or a chat as ``role: content`` lines.

    The one rendering for training, calibration and evaluation (``record_prompt``) and for the guard's checks
    at serving time, so a classifier reads a chat the same way in both."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def record_prompt(record: Record) -> str:
    """``chat_prompt`` of a record's chat (its prompt, or its messages before the response)."""
    return chat_prompt(record.chat)


def shorten(text: str, tokenizer: Any, budget: int) -> tuple[str, int]:
    """Keep the first and last tokens of ``text`` within ``budget`` tokens; returns (text, tokens dropped)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= budget:
        return text, 0
    if budget <= 0:
        return "", len(offsets)
    marker = len(tokenizer(ELISION, add_special_tokens=False)["input_ids"])
    keep = max(budget - marker - SLACK_TOKENS, 1)
    head = (keep + 1) // 2
    tail = keep - head
    start = offsets[head - 1][1]
    end = offsets[len(offsets) - tail][0] if tail else len(text)
    return text[:start] + ELISION + text[end:], len(offsets) - keep


def format_input(
    tokenizer: Any,
    prompt: str,
    response: str | None,
    max_length: int,
    min_prompt_tokens: int = MIN_PROMPT_TOKENS,
) -> FormattedInput:
    """Encode a prompt (``response=None``) or an exchange in ``max_length`` tokens, the response whole if it fits."""
    if response is None:
        budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        short, dropped = shorten(prompt, tokenizer, budget)
        encoding = tokenizer(short, truncation=True, max_length=max_length)
        return FormattedInput(dict(encoding), dropped, 0)
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])
    n_response = len(tokenizer(response, add_special_tokens=False, verbose=False)["input_ids"])
    prompt_budget = max(budget - n_response, min(n_prompt, min_prompt_tokens, budget))
    short_prompt, prompt_dropped = shorten(prompt, tokenizer, prompt_budget)
    used = min(n_prompt, prompt_budget) if not prompt_dropped else prompt_budget
    short_response, response_dropped = shorten(response, tokenizer, budget - used)
    # Safety net for re-tokenisation drift: it trims the prompt's end, never the response.
    encoding = tokenizer(short_prompt, short_response, truncation="only_first", max_length=max_length)
    return FormattedInput(dict(encoding), prompt_dropped, response_dropped)
