"""The stream monitor: a small local causal LM reads a remote response teacher-forced, and the probe scores
every token from its hidden states.

The upstream text is re-tokenised with the monitor's tokenizer; one KV-cached forward reads a chunk of
``chunk_tokens`` new tokens. Only the layers up to the probe's deepest one run: a forward hook on the
next layer stops the forward there, so neither deeper layers nor the LM head cost anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from constitutional_guard.guard.protocols import TokenProbe
from constitutional_guard.guard.sources import add_time
from constitutional_guard.models.loading import LoadedModel, Message, new_kv_cache

MAX_UNCUT_TOKENS = 32
"""Tokens of text without whitespace held back before they are cut anyway."""


class _Truncated(Exception):
    """Raised by the hook after the deepest layer the probe reads: the rest of the forward is skipped."""


@dataclass(frozen=True)
class MonitoredToken:
    """One monitor token of the upstream text: the text it covers, its id and its probe score."""

    piece: str
    token_id: int
    score: float


class StreamMonitor:
    """Scores remote text token by token with ``probe`` over ``lm``'s hidden states (teacher forcing)."""

    def __init__(self, lm: LoadedModel, probe: TokenProbe, chunk_tokens: int = 8):
        if not getattr(lm.tokenizer, "is_fast", False):
            raise ValueError(f"the stream monitor needs a fast tokenizer (offsets); {lm.name} has a slow one")
        self.lm = lm
        self.probe = probe
        self.chunk_tokens = chunk_tokens
        self.base = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else lm.model
        self.deepest = max(probe.layers)
        layers = getattr(self.base, "layers", None)
        self._local = threading.local()
        self.truncated = layers is not None and self.deepest < len(layers)
        if self.truncated:
            self._install_hooks(layers)

    @property
    def layers_run(self) -> int:
        """Decoder layers one forward runs."""
        return self.deepest if self.truncated else self.lm.num_layers

    def _install_hooks(self, layers: Any) -> None:
        """Capture ``hidden_states[i]`` for the probe's layers; stop after layer ``deepest`` (index ``deepest``).

        Hooks act only in the thread whose forward set ``capture`` (other users of the model are untouched).
        """
        wanted = set(self.probe.layers)

        def capture(index: int, tensor: torch.Tensor) -> None:
            captured = getattr(self._local, "capture", None)
            if captured is not None and index in wanted:
                captured[index] = tensor

        def before_first(_: Any, args: tuple, kwargs: dict) -> None:
            capture(0, args[0] if args else kwargs["hidden_states"])

        def after(layer_index: int):
            def hook(_: Any, __: Any, output: Any) -> None:
                capture(layer_index + 1, output[0] if isinstance(output, tuple) else output)
                if layer_index + 1 == self.deepest and getattr(self._local, "capture", None) is not None:
                    raise _Truncated

            return hook

        layers[0].register_forward_pre_hook(before_first, with_kwargs=True)
        for i in range(self.deepest):
            layers[i].register_forward_hook(after(i))

    @torch.inference_mode()
    def hidden_states(self, input_ids: list[int], cache: dict[str, Any]) -> list[torch.Tensor | None]:
        """One forward over ``input_ids`` (cache filled in place) → the hidden states the probe reads."""
        ids = torch.tensor([input_ids], device=self.lm.device)
        if not self.truncated:
            return list(self.base(input_ids=ids, use_cache=True, output_hidden_states=True, **cache).hidden_states)
        captured: dict[int, torch.Tensor] = {}
        self._local.capture = captured
        try:
            self.base(input_ids=ids, use_cache=True, **cache)
        except _Truncated:
            pass
        finally:
            self._local.capture = None
        return [captured.get(i) for i in range(self.deepest + 1)]

    def start(self, messages: list[Message], timings: dict[str, float]) -> MonitorStream:
        """A stream that scores the response to ``messages`` as it arrives (the prompt is read with its first
        chunk, so a prompt blocked by the input check costs no forward)."""
        return MonitorStream(self, self.lm.encode_messages(messages), timings)


@dataclass
class MonitorStream:
    """One response being monitored: text in, scored tokens out (each chunk of tokens once it is complete)."""

    monitor: StreamMonitor
    prompt_ids: list[int]
    timings: dict[str, float]
    cache: dict[str, Any] | None = None
    text: str = ""
    committed: int = 0
    """Characters of ``text`` already cut into tokens."""
    pending: list[tuple[int, int]] = field(default_factory=list)
    """Cut but not yet scored tokens: (id, end character)."""
    scored_to: int = 0
    """Characters covered by scored tokens."""

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def feed(self, delta: str) -> Iterator[MonitoredToken]:
        """Add upstream text; yield the tokens of every complete chunk, scored.

        The last word of the text is not cut yet: more text may extend it and change its tokens.
        """
        self.text += delta
        self._cut(final=False)
        while len(self.pending) >= self.monitor.chunk_tokens:
            yield from self._score(self.monitor.chunk_tokens)

    def flush(self) -> Iterator[MonitoredToken]:
        """The upstream ended: score every remaining token; the last one covers the text to its end."""
        self._cut(final=True)
        if self.pending:
            token_id, _ = self.pending[-1]
            self.pending[-1] = (token_id, len(self.text))
        while self.pending:
            yield from self._score(min(len(self.pending), self.monitor.chunk_tokens))

    def _cut(self, final: bool) -> None:
        tail = self.text[self.committed :]
        if not tail:
            return
        encoded = self.monitor.lm.tokenizer(tail, add_special_tokens=False, return_offsets_mapping=True)
        tokens = list(zip(encoded["input_ids"], encoded["offset_mapping"], strict=True))
        if not final:
            # cut only before the last whitespace (pre-tokenisers split there, so the tokens before it are
            # those of the whole text); a long run without whitespace keeps back only its last token
            boundary = max(tail.rfind(" "), tail.rfind("\n"))
            whole = [t for t in tokens if t[1][1] <= boundary]
            tokens = whole if whole or len(tokens) <= MAX_UNCUT_TOKENS else tokens[:-1]
        for token_id, (_, end) in tokens:
            self.pending.append((int(token_id), self.committed + int(end)))
        if tokens:
            self.committed = self.pending[-1][1]

    def _score(self, count: int) -> Iterator[MonitoredToken]:
        chunk, self.pending = self.pending[:count], self.pending[count:]
        tick = time.perf_counter()
        ids = [token_id for token_id, _ in chunk]
        if self.cache is None:  # the first chunk: read the prompt in the same forward
            self.cache = new_kv_cache(self.monitor.base)
            ids = self.prompt_ids + ids
        hidden = self.monitor.hidden_states(ids, self.cache)
        scores = self.monitor.probe.score_hidden_states(hidden)[0, -len(chunk) :].tolist()
        add_time(self.timings, "monitor", time.perf_counter() - tick)
        for (token_id, end), score in zip(chunk, scores, strict=True):
            piece, self.scored_to = self.text[self.scored_to : end], end
            yield MonitoredToken(piece, token_id, float(score))
