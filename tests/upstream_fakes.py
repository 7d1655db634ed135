"""A scripted OpenAI-compatible engine (plain ASGI, served by uvicorn on 127.0.0.1) and a probe that reads token
ids back from the monitor's embeddings, so tests choose exactly which token the probe flags."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds
from constitutional_guard.guard.guard import Guard
from constitutional_guard.guard.monitor import StreamMonitor
from constitutional_guard.guard.policy import PolicySettings
from constitutional_guard.guard.upstream import RemoteSource, UpstreamSettings
from constitutional_guard.models.loading import LoadedModel
from constitutional_guard.probes.smoothing import make_smoother

BENIGN = "Paris is the capital of France and it is known for its museums and its old bridges. "
HARMFUL = "ZYX recipe: mix the parts then heat them slowly until the mixture turns dark. "
TAIL = "More steps follow here, each one more detailed than the last one, until the end. "
UPSTREAM_TEXT = BENIGN + HARMFUL + TAIL
HARMFUL_AT = len(BENIGN)
"""Character where the harmful span starts: nothing from here on may reach a client."""


def pieces_of(text: str, size: int = 3) -> list[str]:
    """The text cut into small pieces, as an engine streams tokens."""
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class ScriptedUpstream:
    """``/v1/chat/completions`` streaming ``pieces`` as chat.completion chunks, and ``/v1/models``.

    ``fail_status`` answers every chat request with that status and an OpenAI error (``fail_times`` times, then
    normally); ``drop_after`` breaks the connection after that many pieces (no ``[DONE]``); ``stall_s`` waits
    before answering at all; ``linger_s`` keeps the stream open after the last piece for up to that long (a
    generation still running), ending early if the client goes away. ``script``, when set, picks the pieces per
    request body instead of ``pieces``.
    ``sent`` counts the pieces of the last stream; ``disconnected`` tells whether its
    client went away before the end.
    """

    pieces: Sequence[str] = field(default_factory=lambda: pieces_of(UPSTREAM_TEXT))
    delay_s: float = 0.002
    fail_status: int | None = None
    fail_times: int = 1_000_000
    drop_after: int | None = None
    stall_s: float = 0.0
    linger_s: float = 0.0
    script: Callable[[dict[str, Any]], Sequence[str]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    sent: int = 0
    disconnected: bool = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if scope["path"] == "/v1/models":
            await self._json(send, 200, {"object": "list", "data": [{"id": "scripted-model", "object": "model"}]})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(json.loads(body))
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.fail_status is not None and self.fail_times > 0:
            self.fail_times -= 1
            error = {"message": "scripted engine failure", "type": "server_error", "code": None, "param": None}
            await self._json(send, self.fail_status, {"error": error})
            return
        await self._stream(receive, send, self.script(self.requests[-1]) if self.script else self.pieces)

    async def _stream(self, receive: Any, send: Any, pieces: Sequence[str]) -> None:
        self.sent, self.disconnected = 0, False
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        try:
            for index, piece in enumerate(pieces):
                if index == self.drop_after:
                    raise ConnectionAbortedError("scripted drop")  # uvicorn closes without ending the body
                await asyncio.sleep(self.delay_s)
                if gone.is_set():
                    self.disconnected = True
                    return
                await send({"type": "http.response.body", "body": chunk({"content": piece}), "more_body": True})
                self.sent += 1
            if self.linger_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), self.linger_s)
                if gone.is_set():
                    self.disconnected = True
                    return
            usage = {"prompt_tokens": 7, "completion_tokens": len(pieces), "total_tokens": 7 + len(pieces)}
            tail = chunk({}, "stop") + sse({"id": "x", "object": "chat.completion.chunk", "choices": [],
                                             "usage": usage}) + b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watcher.cancel()

    @staticmethod
    async def _json(send: Any, status: int, payload: dict) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return sse({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "model": "scripted-model",
                "choices": [choice]})


@dataclass
class ProbeSettings:
    model_id: str
    hidden_size: int
    escalation_threshold: float = 0.5


class TokenIdProbe:
    """Reads each position's token id back from the embeddings (``hidden_states[0]``) and scores ``flagged``
    ids 0.99, all others 0.01; it also reads layer 1, so the monitor must run (and may stop after) layer 1."""

    def __init__(self, embeddings: torch.Tensor, flagged: set[int], model_id: str = "tiny"):
        self.layers = [0, 1]
        self.config = ProbeSettings(model_id, embeddings.shape[1])
        self.embeddings = embeddings.detach().float()
        self.flagged = flagged

    def score_hidden_states(self, hidden_states: Sequence[torch.Tensor | None]) -> torch.Tensor:
        states, deeper = hidden_states[0], hidden_states[1]
        assert states is not None and deeper is not None and deeper.shape == states.shape
        ids = torch.cdist(states[0].float(), self.embeddings).argmin(-1).tolist()
        return torch.tensor([[0.99 if i in self.flagged else 0.01 for i in ids]])

    def new_smoother(self):
        return make_smoother("none", {})

    def check_compatible(self, model_id: str, hidden_size: int) -> None:
        return None


class ZyxClassifier:
    """Blocks any exchange whose response contains the first character (``Z``) of the scripted harmful span."""

    kind = "keyword"
    thresholds = Thresholds(allow=0.5, block=0.5)

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        score = 0.99 if "Z" in (response or "") else 0.01
        return ClassifierScore(score, self.thresholds.verdict(score), self.thresholds,
                               "unsafe" if score > 0.5 else "safe")


def zyx_probe(lm: LoadedModel) -> TokenIdProbe:
    flagged = set(lm.tokenizer("Z", add_special_tokens=False)["input_ids"])
    return TokenIdProbe(lm.model.get_input_embeddings().weight, flagged)


def remote_guard(lm: LoadedModel, url: str, monitor: bool = True, classifier=None, **settings) -> Guard:
    upstream = UpstreamSettings(base_url=url, model="scripted-model", **settings)
    probe = zyx_probe(lm)
    source = RemoteSource(upstream, StreamMonitor(lm, probe, chunk_tokens=4) if monitor else None)
    return Guard(lm if monitor else None, probe if monitor else None, classifier=classifier, source=source,
                 policy=PolicySettings(release_lag=2, final_check=classifier is not None), classifier_every=4)
