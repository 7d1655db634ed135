"""``POST /v1/chat/completions``: guarded generation answered as OpenAI completions or server-sent chunks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from constitutional_guard.guard.events import (
    ClassifierVerdict,
    Escalation,
    Finished,
    FinishReason,
    GenerationConfig,
    GenerationStatus,
    GuardErrorCode,
    GuardEvent,
    TextReleased,
    TokenRisk,
)
from constitutional_guard.serve.errors import (
    APIError,
    ClientGone,
    guard_failed,
    invalid_request,
    shutting_down,
    timed_out,
    upstream_failed,
)
from constitutional_guard.serve.limits import Admission, Worker
from constitutional_guard.serve.metrics import ServeMetrics
from constitutional_guard.serve.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    GuardErrorInfo,
    GuardInfo,
    Usage,
    VerdictInfo,
)
from constitutional_guard.serve.runner import (
    GuardFailed,
    GuardRun,
    ServedGuard,
    unless_disconnected,
    wait_for_disconnect,
)
from constitutional_guard.serve.settings import ServeSettings

VERDICT_OF_STATUS = {"completed": "allow", "blocked": "block", "held": "uncertain"}
UPSTREAM_CODES = (GuardErrorCode.UPSTREAM_ERROR, GuardErrorCode.UPSTREAM_TIMEOUT)
logger = logging.getLogger(__name__)


def wire_finish_reason(finished: Finished) -> str:
    """OpenAI's finish reasons: a held generation is reported as ``content_filter`` (``guard.status`` says held)."""
    if finished.finish_reason == FinishReason.HELD or finished.status != GenerationStatus.COMPLETED:
        return FinishReason.CONTENT_FILTER.value
    return finished.finish_reason.value


def generation_config(body: ChatCompletionRequest, settings: ServeSettings) -> GenerationConfig:
    """The request's sampling settings, checked against the server's limits."""
    if len(body.messages) > settings.max_messages:
        raise invalid_request(f"{len(body.messages)} messages exceed the limit of {settings.max_messages}", "messages")
    chars = sum(len(m.text()) for m in body.messages)
    if chars > settings.max_prompt_chars:
        raise invalid_request(f"messages hold {chars} characters, over the limit of {settings.max_prompt_chars}",
                              "messages")
    max_tokens = body.requested_max_tokens()
    if max_tokens is not None and max_tokens > settings.max_tokens:
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        raise invalid_request(f"{param}={max_tokens} exceeds the server's limit of {settings.max_tokens}", param)
    defaults = GenerationConfig()
    try:
        return GenerationConfig(
            max_new_tokens=max_tokens or settings.default_max_tokens,
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stop_sequences(),
        )
    except ValueError as exc:
        raise invalid_request(str(exc)) from None


async def check_prompt_tokens(guard: ServedGuard, messages: list[dict[str, str]], limit: int) -> None:
    """Reject prompts longer than ``limit`` tokens of the target model, when the guard exposes it (``guard.lm``)."""
    lm = getattr(guard, "lm", None)
    if lm is None:
        return
    count = len(await asyncio.to_thread(lm.encode_messages, messages))
    if count > limit:
        raise invalid_request(f"the prompt is {count} tokens, over the limit of {limit}", "messages")


@dataclass
class CompletionState:
    """Everything one chat completion has seen: released text, verdicts, risk and the end."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)
    sent: str = ""
    first_release_s: float | None = None
    verdicts: list[ClassifierVerdict] = field(default_factory=list)
    escalations: int = 0
    max_risk: float = 0.0
    finished: Finished | None = None

    def observe(self, event: GuardEvent) -> str | None:
        """Record an event; return text that may now be sent to the client."""
        if isinstance(event, TextReleased):
            if event.text and self.first_release_s is None:
                self.first_release_s = time.perf_counter() - self.started
            self.sent += event.text
            return event.text or None
        if isinstance(event, TokenRisk):
            self.max_risk = max(self.max_risk, event.smoothed)
        elif isinstance(event, Escalation):
            self.escalations += 1
        elif isinstance(event, ClassifierVerdict):
            self.verdicts.append(event)
        elif isinstance(event, Finished):
            self.finished = event
        return None

    @property
    def failed(self) -> bool:
        """The guard failed closed: a check could not be completed."""
        return self.finished is not None and self.finished.error_code is not None

    @property
    def outcome(self) -> str:
        """``failed`` when the guard failed closed, else the generation's status."""
        assert self.finished is not None
        return "failed" if self.failed else self.finished.status.value

    def tail(self, hold_notice: str) -> str:
        """What the client has not yet received of the final answer: the refusal when blocked mid-stream,
        the hold notice when held before any text was sent."""
        assert self.finished is not None
        if self.finished.status == GenerationStatus.HELD:
            return "" if self.sent else hold_notice
        response = self.finished.response
        if response.startswith(self.sent):
            return response[len(self.sent) :]
        return ("\n\n" if self.sent else "") + response

    def guard_info(self) -> GuardInfo:
        assert self.finished is not None
        status = self.finished.status.value
        last = self.verdicts[-1] if self.verdicts else None
        category = max(last.categories, key=last.categories.__getitem__) if last and last.categories else None
        return GuardInfo(
            status=status,
            verdict=last.verdict if last else VERDICT_OF_STATUS[status],
            score=last.score if last else None,
            category=category,
            max_risk=self.max_risk,
            escalations=self.escalations,
            verdicts=[
                VerdictInfo(stage=v.stage, index=v.index, score=v.score, verdict=v.verdict, label=v.label,
                            categories=dict(v.categories))
                for v in self.verdicts
            ],
            error=GuardErrorInfo(code=self.finished.error_code, message=self.finished.error or "")
            if self.failed else None,
        )

    def usage(self) -> Usage:
        assert self.finished is not None
        prompt, completion = self.finished.prompt_tokens, self.finished.completion_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def chunk(self, delta: Delta, finish_reason: str | None = None, **extra: object) -> str:
        choices = [ChunkChoice(delta=delta, finish_reason=finish_reason)] if extra.get("usage") is None else []
        body = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, **extra)
        return sse(body.model_dump_json(exclude_none=True))


def upstream_error(finished: Finished | None) -> APIError | None:
    """The error to answer with when the remote engine failed (the guard held its unreleased text)."""
    if finished is None or finished.error_code not in UPSTREAM_CODES:
        return None
    return upstream_failed(finished.error_code, finished.error or "the upstream failed")


def sse(data: str) -> str:
    return f"data: {data}\n\n"


DONE = sse("[DONE]")


@dataclass
class StreamEnd:
    """Stops a stream's generation, frees its place and records its outcome, exactly once."""

    run: GuardRun
    admission: Admission
    record: Callable[[str], None]
    outcome: str = "cancelled"
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.run.stop()
            self.admission.release()
            self.record(self.outcome)


class GuardedStreamingResponse(StreamingResponse):
    """Ends its stream's generation when the response ends, even if the body was never iterated."""

    def __init__(self, content: AsyncIterator[str], end: StreamEnd, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.end.close()


class ChatService:
    """Runs chat completions through the guard within the server's limits and records their outcome."""

    def __init__(self, guard: ServedGuard, settings: ServeSettings, worker: Worker, metrics: ServeMetrics,
                 model_name: str) -> None:
        self.guard = guard
        self.settings = settings
        self.worker = worker
        self.metrics = metrics
        self.model_name = model_name
        self.hold_notice = guard.constitution.hold_notice

    async def create(self, body: ChatCompletionRequest, request: Request) -> ChatCompletion | StreamingResponse:
        """Queue, generate under guard and answer; errors before the first chunk are HTTP errors."""
        config = generation_config(body, self.settings)
        messages = body.plain_messages()
        await check_prompt_tokens(self.guard, messages, self.settings.max_prompt_tokens)
        admission = self.worker.admit()
        state = CompletionState(id=f"chatcmpl-{uuid.uuid4().hex}", model=self.model_name)
        run = GuardRun(self.guard, messages, config)
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        try:
            first = await unless_disconnected(request, self._first_event(run, state, deadline))
        except BaseException as exc:
            self._record(state, _outcome_of(exc))
            run.stop()
            admission.release()
            raise
        if not body.stream:
            try:
                await unless_disconnected(request, self._drain(run, state, first, deadline))
            except BaseException as exc:
                self._record(state, _outcome_of(exc))
                raise
            finally:
                run.stop()
                admission.release()
            self._record(state, state.outcome)
            return self._completion(state)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        end = StreamEnd(run, admission, lambda outcome: self._record(state, outcome))
        return GuardedStreamingResponse(
            self._sse(run, state, first, deadline, end, request, include_usage),
            end,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _first_event(self, run: GuardRun, state: CompletionState, deadline: float) -> GuardEvent:
        """Queue for a worker, start generating and return the first event after the input check: failures
        so far (an upstream that cannot be reached included) are HTTP errors."""
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        try:
            await asyncio.wait_for(run.start(self.worker), deadline - loop.time())
            self.metrics.queue_seconds.observe(time.perf_counter() - queued)
            state.started = time.perf_counter()
            event = await asyncio.wait_for(run.next(), deadline - loop.time())
            while isinstance(event, ClassifierVerdict) and event.stage == "input":
                state.observe(event)
                event = await asyncio.wait_for(run.next(), deadline - loop.time())
        except TimeoutError:
            raise timed_out(self.settings.request_timeout_s) from None
        except GuardFailed as exc:
            raise guard_failed(exc.__cause__ or exc, state.id) from None
        if event is None:
            raise self._no_result()
        if isinstance(event, Finished) and (error := upstream_error(event)) is not None:
            state.observe(event)
            raise error
        return event

    async def _drain(self, run: GuardRun, state: CompletionState, event: GuardEvent | None, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            while event is not None:
                state.observe(event)
                event = await asyncio.wait_for(run.next(), deadline - loop.time())
        except TimeoutError:
            raise timed_out(self.settings.request_timeout_s) from None
        except GuardFailed as exc:
            raise guard_failed(exc.__cause__ or exc, state.id) from None
        if state.finished is None:
            raise self._no_result()
        if (error := upstream_error(state.finished)) is not None:
            raise error

    def _no_result(self) -> APIError:
        """The guard's events ended without ``Finished``: the server stopped it, or the guard misbehaved."""
        if self.worker.stopping:
            return shutting_down()
        return APIError(500, "server_error", "the guard ended without a result", code="guard_error")

    async def _sse(self, run: GuardRun, state: CompletionState, event: GuardEvent | None, deadline: float,
                   end: StreamEnd, request: Request, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent chunks: released text only; the end carries finish_reason and guard metadata."""
        loop = asyncio.get_running_loop()
        watcher = asyncio.ensure_future(wait_for_disconnect(request))
        watcher.add_done_callback(lambda _: run.stop())
        try:
            try:
                yield state.chunk(Delta(role="assistant", content=""))
                while event is not None:
                    text = state.observe(event)
                    if text:
                        yield state.chunk(Delta(content=text))
                    event = await asyncio.wait_for(run.next(), deadline - loop.time())
                if state.finished is None and watcher.done():
                    return  # the client left and its watcher stopped the generation: cancelled, nothing to send
                if state.finished is None:
                    raise self._no_result()
                if (error := upstream_error(state.finished)) is not None:
                    raise error  # the engine failed: what it sent after the last release stays unsent
                end.outcome = state.outcome
                tail = state.tail(self.hold_notice)
                yield state.chunk(Delta(content=tail or None), wire_finish_reason(state.finished),
                                  guard=state.guard_info())
                if include_usage:
                    yield state.chunk(Delta(), usage=state.usage())
            except TimeoutError:
                end.outcome = "timeout"
                yield sse(json.dumps(timed_out(self.settings.request_timeout_s).payload()))
            except GuardFailed as exc:
                end.outcome = "failed"
                yield sse(json.dumps(guard_failed(exc.__cause__ or exc, state.id).payload()))
            except APIError as exc:
                end.outcome = "cancelled" if exc.code == "shutting_down" else "failed"
                yield sse(json.dumps(exc.payload()))
            yield DONE
        finally:
            watcher.cancel()
            end.close()

    def _completion(self, state: CompletionState) -> ChatCompletion:
        """The whole answer; a held one is the hold notice (no part of a held answer was sent)."""
        assert state.finished is not None
        held = state.finished.status == GenerationStatus.HELD
        content = self.hold_notice if held else state.finished.response
        return ChatCompletion(
            id=state.id,
            created=state.created,
            model=state.model,
            choices=[Choice(message=AssistantMessage(content=content),
                            finish_reason=wire_finish_reason(state.finished))],
            usage=state.usage(),
            guard=state.guard_info(),
        )

    def _record(self, state: CompletionState, outcome: str) -> None:
        if state.failed:
            assert state.finished is not None
            logger.warning("%s: guard failed closed (%s): %s", state.id, state.finished.error_code,
                           state.finished.error)
        m = self.metrics
        m.generations.labels(outcome).inc()
        if outcome in ("blocked", "held"):
            m.blocks.labels("chat").inc()
        if state.escalations:
            m.escalations.inc(state.escalations)
        if state.finished is not None:
            m.completion_tokens.inc(state.finished.completion_tokens)
        if state.first_release_s is not None:
            m.first_release_seconds.observe(state.first_release_s)
        m.generation_seconds.observe(time.perf_counter() - state.started)


def _outcome_of(exc: BaseException) -> str:
    if isinstance(exc, ClientGone | asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, APIError):
        return {504: "timeout", 503: "cancelled"}.get(exc.status, "failed")
    return "failed"
