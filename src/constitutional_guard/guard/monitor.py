"""The stream monitor: a small local causal LM reads a remote response teacher-forced, and the probe scores
every token from its hidden states.

The upstream text is re-tokenised with the monitor's tokenizer; one KV-cached forward reads a chunk of
``chunk_tokens`` new tokens. Only the layers up to the probe's deepest one run: hooks stop the forward there
(``activations.early_exit_states``), so neither deeper layers nor the LM head cost anything.

Concurrent streams share one ``MonitorBatcher``: the chunks they submit within ``max_wait_s`` of each other
(or while a forward runs) are read in one padded forward, each stream keeping its own KV cache. A chunk
that fails fails only its own stream; its tokens are never yielded, so the cascade releases none of them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from constitutional_guard.activations import can_exit_early, early_exit_states
from constitutional_guard.classifiers.lm_states import AnswerStates, StatesWanted
from constitutional_guard.guard.protocols import TokenProbe
from constitutional_guard.guard.sources import add_time
from constitutional_guard.models.loading import LoadedModel, Message, new_kv_cache

MAX_UNCUT_TOKENS = 32
"""Tokens of text without whitespace held back before they are cut anyway."""


@dataclass(frozen=True)
class MonitoredToken:
    """One monitor token of the upstream text: the text it covers, its id and its probe score."""

    piece: str
    token_id: int
    score: float


IDLE_EXIT_S = 5.0
"""Seconds a batcher thread waits for work before it exits (the next chunk starts a new one)."""


@dataclass
class MonitorJob:
    """One forward's worth of a stream: new token ids read over the stream's KV cache, the last ``count`` scored."""

    ids: list[int]
    count: int
    cache: dict[str, Any]
    """The stream's cache keyword argument; a batched forward replaces the cache object in it."""
    states_from: int | None = None
    """The first position whose states come back (default: the first scored one)."""
    scores: list[float] | None = None
    states: torch.Tensor | None = None
    """The states from ``states_from`` on at the monitor's ``answer_layers`` (``[tokens, layers, hidden]``) when it
    keeps them."""
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def states_start(self) -> int:
        return len(self.ids) - self.count if self.states_from is None else self.states_from

    def result(self) -> list[float]:
        """Wait for the forward; its scores, or its error raised here."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.scores is not None
        return self.scores


class MonitorBatcher:
    """Collects the jobs of concurrent streams and runs them through ``monitor.run_jobs`` in batches.

    One worker thread (started on demand, gone after ``IDLE_EXIT_S`` idle) takes the first waiting job, waits
    up to ``max_wait_s`` for more (not when every active stream already waits) and runs at most ``max_batch``.
    """

    def __init__(self, monitor: StreamMonitor, max_batch: int, max_wait_s: float):
        self.monitor = monitor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: deque[MonitorJob] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, job: MonitorJob) -> MonitorJob:
        """Queue ``job`` (``job.result()`` waits for it)."""
        with self._cond:
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="cguard-monitor", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job

    def _next_batch(self) -> list[MonitorJob] | None:
        with self._cond:
            if not self._queue:
                self._cond.wait(IDLE_EXIT_S)
            if not self._queue:
                self._thread = None
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < min(self.max_batch, self.monitor.active_streams):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self.monitor.run_jobs(batch)
            except BaseException as exc:  # every job of the batch fails closed
                for job in batch:
                    if job.scores is None and job.error is None:
                        job.error = exc
            finally:
                for job in batch:
                    job.done.set()


class StreamMonitor:
    """Scores remote text token by token with ``probe`` over ``lm``'s hidden states (teacher forcing).

    ``max_batch`` > 1 batches the forwards of concurrent streams (``MonitorBatcher``); 1 runs each stream's
    forward in its own thread. ``first_chunk_tokens`` (default ``chunk_tokens``) sizes a stream's first chunk:
    smaller means earlier first scores, so earlier first released text.
    """

    def __init__(self, lm: LoadedModel, probe: TokenProbe, chunk_tokens: int = 8, max_batch: int = 16,
                 max_wait_s: float = 0.003, first_chunk_tokens: int | None = None):
        if not getattr(lm.tokenizer, "is_fast", False):
            raise ValueError(f"the stream monitor needs a fast tokenizer (offsets); {lm.name} has a slow one")
        for name, value in (("chunk_tokens", chunk_tokens), ("max_batch", max_batch),
                            ("first_chunk_tokens", first_chunk_tokens if first_chunk_tokens is not None else 1)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be at least 0, got {max_wait_s}")
        self.lm = lm
        self.probe = probe
        self.chunk_tokens = chunk_tokens
        self.first_chunk_tokens = min(first_chunk_tokens or chunk_tokens, chunk_tokens)
        self.batcher = MonitorBatcher(self, max_batch, max_wait_s) if max_batch > 1 else None
        self.active_streams = 0
        """Streams with a response being read (the batcher does not wait for more jobs than these)."""
        self._active_lock = threading.Lock()
        self.base = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else lm.model
        self.deepest = max(probe.layers)
        self.truncated = can_exit_early(self.base, probe.layers)
        self.kept_states: StatesWanted | None = None
        """The answer tokens' states each stream keeps (``keep_answer_states``), if any."""

    @property
    def answer_layers(self) -> tuple[int, ...]:
        return self.kept_states.layers if self.kept_states is not None else ()

    def keep_answer_states(self, wanted: StatesWanted) -> bool:
        """Keep these states of the prompt and the answer in every stream from now on, if a forward computes them
        anyway (no layer deeper than the probe's deepest when the stack stops early); whether it will."""
        if not wanted.layers or (self.truncated and max(wanted.layers) > self.deepest):
            return False
        self.kept_states = wanted
        return True

    @property
    def layers_run(self) -> int:
        """Decoder layers one forward runs."""
        return self.deepest if self.truncated else self.lm.num_layers

    @torch.inference_mode()
    def hidden_states(self, input_ids: list[int] | torch.Tensor, cache: dict[str, Any],
                      **inputs: torch.Tensor) -> list[torch.Tensor | None]:
        """One forward over ``input_ids`` (one stream's ids, or a [batch, tokens] tensor with its
        ``attention_mask`` and ``position_ids`` in ``inputs``), the cache filled in place → the hidden states
        the probe reads."""
        ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor([input_ids])
        ids = ids.to(self.lm.device)
        inputs = {key: value.to(self.lm.device) for key, value in inputs.items()}
        if not self.truncated:
            out = self.base(input_ids=ids, use_cache=True, output_hidden_states=True, **inputs, **cache)
            return list(out.hidden_states)
        layers = sorted({*self.probe.layers, *self.answer_layers})
        captured = early_exit_states(self.base, layers, input_ids=ids, use_cache=True, **inputs, **cache)
        if captured is None:  # not after can_exit_early said yes
            raise RuntimeError("the monitor's decoder can no longer stop early")
        return [captured.get(i) for i in range(self.deepest + 1)]

    def start(self, messages: list[Message], timings: dict[str, float]) -> MonitorStream:
        """A stream that scores the response to ``messages`` as it arrives. The prompt is read by ``read_prompt``
        before an input check that reads its states, else by ``prefill`` or with the first chunk (a prompt the input
        check blocks then costs no forward)."""
        prompt_ids = self.lm.encode_messages(messages)
        wanted = self.kept_states
        answer = AnswerStates.start(self.lm, wanted, prompt_ids) if wanted is not None else None
        return MonitorStream(self, prompt_ids, timings, answer_states=answer)

    def submit(self, job: MonitorJob) -> MonitorJob:
        """Run ``job`` through the batcher, or here when batching is off (``job.result()`` has the outcome)."""
        if self.batcher is not None:
            return self.batcher.submit(job)
        try:
            self.run_jobs([job])
        finally:
            job.done.set()
        return job

    def _count_stream(self, delta: int) -> None:
        with self._active_lock:
            self.active_streams += delta

    def run_jobs(self, jobs: Sequence[MonitorJob]) -> None:
        """Score ``jobs``: chunks in one padded forward, prompts (longer) in another; if a padded forward
        fails, each of its jobs runs alone, so an error fails only the stream whose chunk caused it."""
        chunks = [job for job in jobs if len(job.ids) <= self.chunk_tokens]
        prompts = [job for job in jobs if len(job.ids) > self.chunk_tokens]
        for group in (chunks, prompts):
            if len(group) > 1:
                try:
                    self._run_padded(group)
                    continue
                except Exception:  # retried one by one below
                    pass
            for job in group:
                self._run_one(job)

    def _run_one(self, job: MonitorJob) -> None:
        try:
            hidden = self.hidden_states(job.ids, job.cache)
            scores = self.probe.score_hidden_states(hidden)[0, len(job.ids) - job.count :]
            job.scores = [float(x) for x in scores.tolist()] if job.count else []
            job.states = self._answer_states(hidden, 0, job.states_start, len(job.ids))
        except Exception as exc:  # the job's stream fails closed
            job.error = exc

    def _run_padded(self, jobs: Sequence[MonitorJob]) -> None:
        """One forward for several streams: their caches left-padded to the longest, their new tokens
        right-padded; afterwards each stream's cache is its own slice of the batch's."""
        past = [_cache_of(job.cache).get_seq_length() for job in jobs]
        lengths = [len(job.ids) for job in jobs]
        longest_past, longest = max(past), max(lengths)
        ids = torch.zeros(len(jobs), longest, dtype=torch.long)
        mask = torch.zeros(len(jobs), longest_past + longest, dtype=torch.long)
        positions = torch.zeros(len(jobs), longest, dtype=torch.long)
        for row, (job, seen, length) in enumerate(zip(jobs, past, lengths, strict=True)):
            ids[row, :length] = torch.tensor(job.ids)
            mask[row, longest_past - seen : longest_past + length] = 1
            positions[row] = torch.arange(seen, seen + longest)
        batch = new_kv_cache(self.base)
        merged = _cache_of(batch)
        if longest_past:
            for layer in range(self.layers_run):
                merged.update(*_left_padded([_cache_of(job.cache) for job in jobs], layer, longest_past), layer)
        hidden = self.hidden_states(ids, batch, attention_mask=mask, position_ids=positions)
        scores = self.probe.score_hidden_states(hidden)
        results = []
        for row, (job, seen, length) in enumerate(zip(jobs, past, lengths, strict=True)):
            own = new_kv_cache(self.base)
            start, end = longest_past - seen, longest_past + length
            for layer in range(self.layers_run):
                keys, values = merged.layers[layer].keys, merged.layers[layer].values
                _cache_of(own).update(keys[row : row + 1, :, start:end], values[row : row + 1, :, start:end], layer)
            job_scores = [float(x) for x in scores[row, length - job.count : length].tolist()]
            results.append((own, job_scores, self._answer_states(hidden, row, job.states_start, length)))
        for job, (own, job_scores, states) in zip(jobs, results, strict=True):
            job.cache.update(own)
            job.scores, job.states = job_scores, states

    def _answer_states(self, hidden: Sequence[torch.Tensor | None], row: int, start: int,
                       end: int) -> torch.Tensor | None:
        """Positions ``start:end`` of batch row ``row`` at ``answer_layers`` (``[tokens, layers, hidden]``)."""
        if not self.answer_layers or start >= end:
            return None
        parts = [hidden[layer] for layer in self.answer_layers]
        if any(part is None for part in parts):
            raise RuntimeError(f"the monitor's forward did not keep layers {list(self.answer_layers)}")
        return torch.stack([part[row, start:end] for part in parts if part is not None], dim=1).float().cpu()


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
    counted: bool = False
    """Counted in the monitor's active streams (from the first forward until ``close``)."""
    answer_states: AnswerStates | None = None
    """The prompt's and the answer tokens' states, when the monitor keeps them (``keep_answer_states``)."""
    prompt_job: MonitorJob | None = None
    """The prompt's forward, sent by ``read_prompt`` and not yet collected."""

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def next_chunk(self) -> int:
        """Tokens the next forward reads (fewer for the first chunk)."""
        return self.monitor.first_chunk_tokens if self.scored_to == 0 else self.monitor.chunk_tokens

    def read_prompt(self) -> None:
        """Send the prompt's forward now without waiting for it: the input check runs meanwhile, and waits for the
        prompt's states where it reads them (``AnswerStates.prompt_states``); the first chunk waits in any case."""
        if self.cache is None:
            self._activate()
            self.cache = new_kv_cache(self.monitor.base)
            self.prompt_job = self._submit(self.prompt_ids, 0, len(self.prompt_ids))
            if self.answer_states is not None:
                self.answer_states.pending = self._collect_prompt

    def prefill(self) -> None:
        """Read the prompt now (e.g. while the upstream produces its first tokens), so the first chunk's
        forward reads only its own tokens."""
        self.read_prompt()
        self._collect_prompt()

    def _collect_prompt(self) -> None:
        """Wait for the prompt's forward sent by ``read_prompt``, if any, and keep its states."""
        job, self.prompt_job = self.prompt_job, None
        if job is not None:
            if self.answer_states is not None:
                self.answer_states.pending = None
            try:
                self._collect(job, 0, len(self.prompt_ids))
            except BaseException:
                self.cache = None  # a failed read leaves no cache to read on from
                raise

    def close(self) -> None:
        """The response is over (or abandoned): the stream no longer counts as active."""
        if self.counted:
            self.counted = False
            self.monitor._count_stream(-1)

    def _activate(self) -> None:
        if not self.counted:
            self.counted = True
            self.monitor._count_stream(1)

    def _submit(self, ids: list[int], count: int, prompt: int = 0) -> MonitorJob:
        """Send the forward over ``ids``, the first ``prompt`` of them the prompt, the last ``count`` to be scored
        (without batching it runs here)."""
        assert self.cache is not None
        states_from = 0 if self.answer_states is not None and prompt else None
        tick = time.perf_counter()
        try:
            return self.monitor.submit(MonitorJob(ids, count, self.cache, states_from=states_from))
        finally:
            add_time(self.timings, "monitor", time.perf_counter() - tick)

    def _collect(self, job: MonitorJob, count: int, prompt: int = 0) -> list[float]:
        """Wait for ``job``; the probe's scores of its last ``count`` tokens. Where the stream keeps states, the
        prompt's and the scored tokens' go to ``answer_states``."""
        tick = time.perf_counter()
        try:
            scores = job.result()
        finally:
            add_time(self.timings, "monitor", time.perf_counter() - tick)
        kept, ids = self.answer_states, job.ids
        if kept is not None and (prompt or count):
            if job.states is None or len(job.states) != len(ids) - job.states_start:
                raise RuntimeError("the monitor's forward returned no states to keep")
            states = job.states.numpy()
            if prompt:
                kept.keep_prompt(states[:prompt])
            for token_id, row in zip(ids[len(ids) - count :], states[len(states) - count :], strict=True):
                kept.append(token_id, None if kept.full else row)
        return scores

    def feed(self, delta: str) -> Iterator[MonitoredToken]:
        """Add upstream text; yield the tokens of every complete chunk, scored.

        The last word of the text is not cut yet: more text may extend it and change its tokens.
        """
        self.text += delta
        self._cut(final=False)
        while len(self.pending) >= self.next_chunk:
            yield from self._score(self.next_chunk)

    def flush(self) -> Iterator[MonitoredToken]:
        """The upstream ended: score every remaining token; the last one covers the text to its end."""
        self._cut(final=True)
        if self.pending:
            token_id, _ = self.pending[-1]
            self.pending[-1] = (token_id, len(self.text))
        while self.pending:
            yield from self._score(min(len(self.pending), self.next_chunk))

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
        ids = [token_id for token_id, _ in chunk]
        prompt = 0
        self._collect_prompt()
        if self.cache is None:  # the first chunk without a prefill: read the prompt in the same forward
            self._activate()
            self.cache = new_kv_cache(self.monitor.base)
            ids, prompt = self.prompt_ids + ids, len(self.prompt_ids)
        scores = self._collect(self._submit(ids, len(chunk), prompt), len(chunk), prompt)
        for (token_id, end), score in zip(chunk, scores, strict=True):
            piece, self.scored_to = self.text[self.scored_to : end], end
            yield MonitoredToken(piece, token_id, float(score))


def _cache_of(cache: dict[str, Any]) -> Any:
    """The cache object inside a cache keyword argument (``new_kv_cache``)."""
    return next(iter(cache.values()))


def _left_padded(caches: Sequence[Any], layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of ``layer`` of each single-stream cache, left-padded with zeros to ``length``."""
    filled = [c.layers[layer] for c in caches if c.get_seq_length() > 0]
    sample_k, sample_v = filled[0].keys, filled[0].values
    keys = sample_k.new_zeros((len(caches), sample_k.shape[1], length, sample_k.shape[3]))
    values = sample_v.new_zeros((len(caches), sample_v.shape[1], length, sample_v.shape[3]))
    for row, cache in enumerate(caches):
        seen = cache.get_seq_length()
        if seen:
            keys[row, :, length - seen :] = cache.layers[layer].keys[0]
            values[row, :, length - seen :] = cache.layers[layer].values[0]
    return keys, values
