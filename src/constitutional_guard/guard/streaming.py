"""The response text of a token stream: stop strings, and how much of it may be shown yet.

The loops that produce the tokens live in ``models.generation`` (``token_loop`` for the guard's local
source, ``generate_batch`` for batches); they are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from constitutional_guard.models.generation import BatchOutput, Sampler, Step, generate_batch, token_loop

__all__ = [
    "REPLACEMENT_CHAR", "BatchOutput", "ResponseText", "Sampler", "Step", "generate_batch", "token_loop", "visible_end",
]

REPLACEMENT_CHAR = "\ufffd"


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
