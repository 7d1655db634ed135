"""Token sources: where the cascade's steps come from (the local KV-cached loop here; a remote stream in
``guard.upstream``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from constitutional_guard.classifiers.lm_states import AnswerStates, StatesWanted
from constitutional_guard.guard.events import FinishReason, GenerationConfig, GuardErrorCode, SourceError
from constitutional_guard.guard.protocols import TokenProbe
from constitutional_guard.guard.streaming import ResponseText, visible_end
from constitutional_guard.models.generation import Prefill, prefill, token_loop
from constitutional_guard.models.loading import LoadedModel, Message


@dataclass(frozen=True)
class SourceStep:
    """One response token: its index, and its probe score when the source has a probe."""

    index: int
    token_id: int | None = None
    score: float | None = None


class StreamText(Protocol):
    """The response as the cascade reads it (``ResponseText`` for token ids, ``PieceText`` for text pieces)."""

    stopped: bool

    def __len__(self) -> int: ...

    def text_through(self, num_tokens: int, final: bool = False) -> str: ...

    def token_text(self, index: int) -> str: ...


class Steps(Protocol):
    """The steps still to come (a generator, or an object that closes more with it); closing them stops the
    source."""

    def __iter__(self) -> Iterator[SourceStep]: ...

    def close(self) -> None: ...


@dataclass
class SourceStream:
    """One response being produced: its text so far, the steps still to come and why it ended."""

    text: StreamText
    prompt_tokens: int
    finish_reason: FinishReason = FinishReason.LENGTH
    """Set by the source when its steps end (``stop`` on end-of-sequence); the cascade sets ``stop`` on a stop
    string."""
    steps: Steps = field(init=False)
    """Assigned by the source right after creating the stream; closing it stops the source."""
    answer_states: AnswerStates | None = None
    """The prompt's and the answer tokens' hidden states, kept by a source asked to (``keep_answer_states``) for the
    input and exchange checks."""
    read_prompt: Callable[[], None] | None = None
    """Reads the prompt now, which the source does anyway, keeping its states in ``answer_states`` (set by a source
    that keeps states; the cascade calls it before an input check that reads them)."""


class TokenSource(Protocol):
    """Produces a response for a chat, step by step."""

    @property
    def model_id(self) -> str: ...

    def open(self, messages: list[Message], config: GenerationConfig, timings: dict[str, float]) -> SourceStream:
        """Start a response; the steps are produced lazily as the returned stream is iterated."""
        ...


class PieceText:
    """A response assembled from text pieces (one per token), with stop strings applied."""

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = tuple(stops)
        self.pieces: list[str] = []
        self.ends: list[int] = []
        self.text = ""
        self.stopped = False

    def __len__(self) -> int:
        return len(self.pieces)

    def append(self, piece: str) -> None:
        self.pieces.append(piece)
        self.text += piece
        self.ends.append(len(self.text))
        if self.stops:
            self.stopped = visible_end(self.text, self.stops)[1]

    def text_through(self, num_tokens: int, final: bool = False) -> str:
        """Showable text of the first ``num_tokens`` pieces; ``final`` means no more pieces will come."""
        text = self.text[: self.ends[num_tokens - 1]] if num_tokens > 0 else ""
        end, found = visible_end(text, self.stops)
        if final and not found:
            end = len(text)
        return text[:end]

    def token_text(self, index: int) -> str:
        return self.pieces[index]


@dataclass
class LocalSource:
    """The guarded model itself: one KV-cached forward per token, the probe reading its hidden states."""

    lm: LoadedModel
    probe: TokenProbe
    kept_states: StatesWanted | None = None
    """The answer tokens' states each stream keeps (``SourceStream.answer_states``), if any."""

    @property
    def model_id(self) -> str:
        return self.lm.name

    def keep_answer_states(self, wanted: StatesWanted) -> bool:
        """Keep these states of the prompt and the answer from now on (the generator computes them anyway)."""
        self.kept_states = wanted
        return True

    def open(
        self, messages: list[Message], config: GenerationConfig, timings: dict[str, float],
        forced: list[int] | None = None,
    ) -> SourceStream:
        """``forced`` replays a given response (teacher forcing) instead of sampling."""
        prompt_ids = self.lm.encode_messages(messages)
        text = ResponseText(self.lm.tokenizer, config.stop)
        stream = SourceStream(text, len(prompt_ids))
        read: list[Prefill] = []
        if self.kept_states is not None:
            stream.answer_states = AnswerStates.start(self.lm, self.kept_states, prompt_ids)
            stream.read_prompt = lambda: self._read_prompt(stream, prompt_ids, read, timings)
        stream.steps = self._steps(stream, text, prompt_ids, config, forced, timings, read)
        return stream

    def _read_prompt(
        self, stream: SourceStream, prompt_ids: list[int], read: list[Prefill], timings: dict[str, float]
    ) -> None:
        """The prompt's forward, ahead of the loop that then goes on from it; its states go to the kept ones."""
        if read or stream.answer_states is None:
            return
        layers = stream.answer_states.layers
        tick = time.perf_counter()
        read.append(prefill(self.lm.model, prompt_ids, layers))
        add_time(timings, "generation", time.perf_counter() - tick)
        states = torch.stack([read[0].states.pop(layer) for layer in layers], dim=1)
        stream.answer_states.keep_prompt(states.float().cpu().numpy())

    def _steps(
        self, stream: SourceStream, text: ResponseText, prompt_ids: list[int], config: GenerationConfig,
        forced: list[int] | None, timings: dict[str, float], read: list[Prefill],
    ) -> Generator[SourceStep, None, None]:
        loop = token_loop(self.lm.model, prompt_ids, config, self.lm.eos_token_ids, forced_ids=forced,
                          prefilled=read[0] if read else None)
        try:
            while True:
                tick = time.perf_counter()
                step = next(loop, None)
                add_time(timings, "generation", time.perf_counter() - tick)
                if step is None:
                    return
                if step.eos:
                    stream.finish_reason = FinishReason.STOP
                    return
                text.append(step.token_id)
                kept = stream.answer_states
                if kept is not None:
                    states = None if kept.full else torch.stack([step.hidden_states[i][0, -1] for i in kept.layers])
                    kept.append(step.token_id, states.float().cpu().numpy() if states is not None else None)
                yield SourceStep(step.index, step.token_id, self._score(step.index, step.hidden_states, timings))
        finally:
            loop.close()

    def _score(self, index: int, hidden_states: Any, timings: dict[str, float]) -> float:
        tick = time.perf_counter()
        try:
            score = float(self.probe.score_hidden_states(hidden_states)[0, -1])
        except Exception as exc:
            raise SourceError(GuardErrorCode.PROBE_FAILED, f"probe failed: {exc!r}") from exc
        add_time(timings, "probe", time.perf_counter() - tick)
        return score


def add_time(timings: dict[str, float], key: str, seconds: float) -> None:
    timings[key] = timings.get(key, 0.0) + seconds
