"""A remote OpenAI-compatible engine (vLLM, SGLang, llama.cpp …) as a token source.

The upstream is always asked to stream. Its text reaches the cascade only as steps: scored token by token
by the stream monitor when there is one, else as plain pieces that the classifier checks periodically.
Closing the steps closes the HTTP response, which aborts the upstream request (a block stops it at once).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import httpx
from pydantic import ConfigDict, Field, field_validator

from constitutional_guard.classifiers.lm_states import StatesWanted
from constitutional_guard.config_io import SettingsModel
from constitutional_guard.guard.events import FinishReason, GenerationConfig, GuardErrorCode, SourceError
from constitutional_guard.guard.monitor import MonitorStream, StreamMonitor
from constitutional_guard.guard.sources import PieceText, SourceStep, SourceStream, add_time
from constitutional_guard.models.loading import Message

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class UpstreamSettings(SettingsModel):
    """Where the guarded engine runs; stored under ``upstream:`` in ``guard.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1.")
    model: str | None = Field(default=None, description="Model name sent upstream; null uses the first it lists.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the upstream's API key (the key never goes here)."
    )
    connect_timeout_s: float = Field(default=10.0, gt=0.0, description="Seconds to connect to the upstream.")
    read_timeout_s: float = Field(default=60.0, gt=0.0, description="Longest wait for the upstream's next bytes.")
    retries: int = Field(
        default=2, ge=0, description="Retries of a request that failed before any output (no connection, 429, 502-504)."
    )
    retry_backoff_s: float = Field(default=0.5, ge=0.0, description="First wait between retries; doubles each time.")
    monitor: bool = Field(
        default=True, description="Score the upstream text with the target model and the probe; false: classifier only."
    )
    monitor_chunk_tokens: int = Field(default=8, ge=1, description="Monitor tokens read per forward.")
    monitor_first_chunk_tokens: int | None = Field(
        default=None, ge=1, description="Monitor tokens of a response's first forward (earlier first release); "
        "null: the policy's release_lag + 1, at most monitor_chunk_tokens."
    )
    monitor_batch_size: int = Field(
        default=16, ge=1, description="Most concurrent streams whose chunks the monitor reads in one forward (1: no "
        "batching)."
    )
    monitor_max_wait_ms: float = Field(
        default=3.0, ge=0.0, description="Longest wait, ms, for other streams' chunks to join a monitor forward."
    )
    classifier_every: int = Field(
        default=16, ge=1, description="Without the monitor, classify the response every this many tokens."
    )
    overlap_input_check: bool = Field(
        default=False, description="Send the request while the input check runs (an earlier first token). Nothing is "
        "read before the check passes, but a prompt it blocks has then reached the engine (its answer is dropped "
        "unread and the request closed)."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @classmethod
    def merged(cls, base: UpstreamSettings | None, **values: Any) -> UpstreamSettings:
        """``base`` (e.g. a bundle's section) with the given non-None ``values`` replacing its fields."""
        data = base.model_dump() if base is not None else {}
        data.update({key: value for key, value in values.items() if value is not None})
        return cls.model_validate(data)

    def api_key(self) -> str | None:
        """The key from ``api_key_env``; raises ValueError if that variable is not set."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"environment variable {self.api_key_env} (upstream API key) is not set")
        return key


class UpstreamError(SourceError):
    """The upstream failed; ``code`` tells a timeout (``upstream_timeout``) from any other failure."""

    @classmethod
    def timeout(cls, message: str) -> UpstreamError:
        return cls(GuardErrorCode.UPSTREAM_TIMEOUT, message)

    @classmethod
    def failed(cls, message: str) -> UpstreamError:
        return cls(GuardErrorCode.UPSTREAM_ERROR, message)


def error_message(response: httpx.Response) -> str:
    """The message of an error answer: OpenAI's ``error.message`` when present, else the body's start."""
    try:
        body = response.read().decode("utf-8", "replace")
    except httpx.HTTPError:
        return f"HTTP {response.status_code}"
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    return body[:500] or f"HTTP {response.status_code}"


class RemoteSource:
    """Steps from a remote OpenAI-compatible chat completions stream, optionally scored by a stream monitor."""

    def __init__(self, settings: UpstreamSettings, monitor: StreamMonitor | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.monitor = monitor
        key = settings.api_key()
        self.client = httpx.Client(
            base_url=settings.base_url + "/",
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            headers={"Authorization": f"Bearer {key}"} if key else None,
            transport=transport,
        )
        self._model = settings.model

    @property
    def scored(self) -> bool:
        """Steps carry probe scores (there is a stream monitor)."""
        return self.monitor is not None

    def keep_answer_states(self, wanted: StatesWanted) -> bool:
        """Keep these answer states if the stream monitor computes them anyway."""
        return self.monitor is not None and self.monitor.keep_answer_states(wanted)

    @property
    def model_id(self) -> str:
        """The model that answers, as responses name it: the configured one, else the first the upstream lists
        (asked once); the base URL only while the upstream cannot be reached to ask."""
        if self._model is None:
            with contextlib.suppress(UpstreamError):
                return self.model_name()
            return self.settings.base_url
        return self._model

    def list_models(self) -> list[dict[str, Any]]:
        """The upstream's ``/models`` entries."""
        with self._request("GET", "models") as response:
            try:
                data = json.loads(response.read())["data"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UpstreamError.failed(f"the upstream's /models answer is not a model list: {exc!r}") from exc
        if not isinstance(data, list):
            raise UpstreamError.failed("the upstream's /models answer is not a model list")
        return data

    def model_name(self) -> str:
        """The model to ask for: the configured one, else the first the upstream lists."""
        if self._model is None:
            models = self.list_models()
            if not models:
                raise UpstreamError.failed("the upstream lists no models")
            self._model = str(models[0]["id"])
        return self._model

    def open(self, messages: list[Message], config: GenerationConfig, timings: dict[str, float]) -> SourceStream:
        early = EarlyRequest(self, messages, config) if self.settings.overlap_input_check else None
        monitored = self.monitor.start(messages, timings) if self.monitor is not None else None
        text = PieceText(config.stop)
        stream = SourceStream(text, monitored.prompt_tokens if monitored is not None else 0)
        if monitored is not None and monitored.answer_states is not None:
            stream.answer_states, stream.read_prompt = monitored.answer_states, monitored.read_prompt
        steps = self._steps(stream, text, messages, config, monitored, timings, early)
        closers = [part.close for part in (early, monitored) if part is not None]
        stream.steps = ClosingSteps(steps, closers) if closers else steps
        return stream

    def request_body(self, messages: list[Message], config: GenerationConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name(),
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        if config.seed is not None:
            body["seed"] = config.seed
        if config.stop:
            body["stop"] = list(config.stop)
        if config.top_k > 0:
            body["top_k"] = config.top_k
        if config.ignore_eos:
            body["ignore_eos"] = True
        return body

    def _steps(
        self, stream: SourceStream, text: PieceText, messages: list[Message], config: GenerationConfig,
        monitored: MonitorStream | None, timings: dict[str, float], early: EarlyRequest | None,
    ) -> Generator[SourceStep, None, None]:
        try:
            yield from self._read(stream, text, messages, config, monitored, timings, early)
        finally:
            if monitored is not None:
                monitored.close()

    @contextlib.contextmanager
    def _chat(
        self, messages: list[Message], config: GenerationConfig, early: EarlyRequest | None
    ) -> Iterator[httpx.Response]:
        """The streamed chat response: sent now, or the one ``early`` sent when the stream was opened."""
        if early is None:
            with self._request("POST", "chat/completions", self.request_body(messages, config)) as response:
                yield response
            return
        try:
            yield early.response()
        finally:
            early.close()

    def _read(
        self, stream: SourceStream, text: PieceText, messages: list[Message], config: GenerationConfig,
        monitored: MonitorStream | None, timings: dict[str, float], early: EarlyRequest | None,
    ) -> Generator[SourceStep, None, None]:
        tick = time.perf_counter()
        with self._chat(messages, config, early) as response:
            if monitored is not None:
                monitored.prefill()  # read the prompt while the upstream produces its first tokens
                tick = time.perf_counter()
            for piece, finish, usage in self._chunks(response):
                add_time(timings, "generation", time.perf_counter() - tick)
                if piece and monitored is not None:
                    for token in monitored.feed(piece):
                        text.append(token.piece)
                        yield SourceStep(len(text) - 1, token.token_id, token.score)
                elif piece:
                    text.append(piece)
                    yield SourceStep(len(text) - 1)
                if finish is not None:
                    stream.finish_reason = FinishReason.LENGTH if finish == "length" else FinishReason.STOP
                if usage is not None and monitored is None:
                    stream.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                tick = time.perf_counter()
        if monitored is not None:
            for token in monitored.flush():
                text.append(token.piece)
                yield SourceStep(len(text) - 1, token.token_id, token.score)

    def _chunks(self, response: httpx.Response) -> Iterator[tuple[str, str | None, dict | None]]:
        """(text, finish reason, usage) per server-sent chunk, until ``[DONE]``; anything unexpected raises."""
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments (keep-alives), event names
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                yield parse_chunk(data)
        except httpx.TimeoutException as exc:
            raise UpstreamError.timeout(f"the upstream sent nothing for {self.settings.read_timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError.failed(f"the upstream stream broke off: {exc!r}") from exc
        raise UpstreamError.failed("the upstream closed the stream before it finished (no [DONE])")

    @contextlib.contextmanager
    def _request(self, method: str, path: str, body: dict | None = None) -> Iterator[httpx.Response]:
        """An open streamed response with a success status; connection failures and 429 / 502-504 are retried."""
        url = f"{self.settings.base_url}/{path}"
        error: UpstreamError | None = None
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(self.settings.retry_backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.send(self.client.build_request(method, path, json=body), stream=True)
            except httpx.ConnectTimeout as exc:
                error = UpstreamError.timeout(f"cannot connect to the upstream at {url} (timed out)")
                error.__cause__ = exc
                continue
            except httpx.TimeoutException as exc:
                message = f"the upstream at {url} sent nothing for {self.settings.read_timeout_s:g}s"
                raise UpstreamError.timeout(message) from exc
            except httpx.TransportError as exc:
                error = UpstreamError.failed(f"cannot reach the upstream at {url}: {exc!r}")
                error.__cause__ = exc
                continue
            if response.status_code < 400:
                try:
                    yield response
                finally:
                    response.close()
                return
            error = UpstreamError.failed(f"upstream answered {response.status_code}: {error_message(response)}")
            response.close()
            if response.status_code not in RETRY_STATUSES:
                break
        assert error is not None
        raise error


class EarlyRequest:
    """A chat request sent on a thread of its own as soon as the stream opens, so the engine answers while the input
    check runs. Its chunks are not read until the steps are: they wait in the connection meanwhile."""

    def __init__(self, source: RemoteSource, messages: list[Message], config: GenerationConfig):
        self._source, self._messages, self._config = source, messages, config
        self._exit = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._closed = False
        self._response: httpx.Response | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._send, name="cguard-upstream-request", daemon=True)
        self._thread.start()

    def _send(self) -> None:
        try:
            body = self._source.request_body(self._messages, self._config)
            response = self._exit.enter_context(self._source._request("POST", "chat/completions", body))
        except BaseException as exc:  # raised where the response is read, as a request sent then would raise
            self._error = exc
            return
        with self._lock:
            self._response = response
            if self._closed:  # closed while it was being sent: abort it now
                self._exit.close()

    def response(self) -> httpx.Response:
        """The open response (once the upstream has answered with its headers); the request's error otherwise."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response

    def close(self) -> None:
        """Close the response, which aborts the upstream request; one still being sent is closed when it opens
        (this never waits for the upstream)."""
        with self._lock:
            self._closed = True
            if self._response is not None:
                self._exit.close()


class ClosingSteps:
    """Steps that also close what the stream opened before its first step (its early request, its monitor stream),
    even when the cascade stops before reading any (an input block)."""

    def __init__(self, steps: Generator[SourceStep, None, None], closers: Sequence[Callable[[], None]]):
        self._steps, self._closers = steps, closers

    def __iter__(self) -> Iterator[SourceStep]:
        return self._steps

    def close(self) -> None:
        self._steps.close()
        for close in self._closers:
            close()


def parse_chunk(data: str) -> tuple[str, str | None, dict | None]:
    """(text, finish reason, usage) of one ``chat.completion.chunk``; an error chunk or bad JSON raises."""
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise UpstreamError.failed(f"the upstream sent a chunk that is not JSON: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError.failed(f"the upstream sent an unexpected chunk: {data[:200]!r}")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError.failed(f"the upstream failed mid-stream: {message}")
    choices = chunk.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    usage = chunk.get("usage")
    return str(content or ""), choice.get("finish_reason"), usage if isinstance(usage, dict) else None
