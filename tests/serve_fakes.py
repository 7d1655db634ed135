"""Test doubles for the server: a scripted guard streaming real tokens, a real guard with stand-in checks, and a
uvicorn server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import uvicorn
from tiny_models import DEVICE

from constitutional_guard.classifiers.base import ClassifierScore, Thresholds, Verdict
from constitutional_guard.constitution import Constitution, load_constitution
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
from constitutional_guard.guard.guard import Guard
from constitutional_guard.models.loading import load_causal_lm
from constitutional_guard.probes import LinearProbe, ProbeConfig

SAFE_ANSWER = "Paris is the capital of France, and it is known for the Eiffel tower and its museums."
UNSAFE_ANSWER = "Sure, here is how to do it: first you obtain the restricted precursor and then you mix it."
RELEASED_BEFORE_BLOCK = 4
"""Tokens of the unsafe answer released before the scripted block; the rest must never reach a client."""


@dataclass
class FakeGuard:
    """The server's guard interface with scripted risk: prompts with BLOCK are blocked mid-stream, HOLD held
    after two tokens, SILENT held before any, NAN fail closed on a non-finite score (moderation too), FAIL
    raise; every other prompt streams ``SAFE_ANSWER`` token by token (real tokens of a real tokenizer)."""

    tokenizer: object
    token_delay: float = 0.0
    constitution: Constitution = field(default_factory=load_constitution)
    model_id: str = "fake-guarded-model"
    tokens_generated: int = 0
    streams_closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _tokens(self, text: str) -> list[str]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces, previous = [], ""
        for i in range(len(ids)):
            decoded = self.tokenizer.decode(ids[: i + 1])
            pieces.append(decoded[len(previous) :])
            previous = decoded
        return pieces

    def stream(self, messages: list[dict[str, str]], config: GenerationConfig) -> Iterator[GuardEvent]:
        prompt = messages[-1]["content"]
        if "FAIL" in prompt:
            raise RuntimeError("scripted failure")
        blocked, held, silent, broken = "BLOCK" in prompt, "HOLD" in prompt, "SILENT" in prompt, "NAN" in prompt
        pieces = self._tokens(UNSAFE_ANSWER if blocked else SAFE_ANSWER)
        prompt_tokens = len(self.tokenizer(prompt)["input_ids"])
        released, index = "", 0
        try:
            for index, piece in enumerate(pieces[: config.max_new_tokens]):
                time.sleep(self.token_delay)
                with self._lock:
                    self.tokens_generated += 1
                risky = blocked and index >= RELEASED_BEFORE_BLOCK
                yield TokenRisk(index, piece, 0.95 if risky else 0.05, 0.9 if risky else 0.05, "continue")
                if risky:
                    yield Escalation(index, 0.9)
                    yield ClassifierVerdict("stream", index, 0.97, "block", "unsafe", 1.0,
                                            {"weapons_cbrn": 0.93, "violent_crime": 0.2})
                    refusal = "\n\n" + self.constitution.refusal
                    yield TextReleased(refusal, -1, -1, is_refusal=True)
                    yield Finished(GenerationStatus.BLOCKED, FinishReason.CONTENT_FILTER, released + refusal,
                                   prompt_tokens, index + 1)
                    return
                if (held and index >= 2) or silent:
                    yield ClassifierVerdict("stream", index, 0.6, "uncertain", "unsafe", 1.0)
                    yield Finished(GenerationStatus.HELD, FinishReason.HELD, released, prompt_tokens, index + 1)
                    return
                if broken:
                    yield Finished(GenerationStatus.HELD, FinishReason.HELD, released, prompt_tokens, index + 1,
                                   error=f"probe scored token {index} as nan",
                                   error_code=GuardErrorCode.NON_FINITE_SCORE)
                    return
                released += piece
                yield TextReleased(piece, index, index)
            reason = FinishReason.LENGTH if config.max_new_tokens < len(pieces) else FinishReason.STOP
            yield Finished(GenerationStatus.COMPLETED, reason, released, prompt_tokens,
                           min(len(pieces), config.max_new_tokens))
        finally:
            with self._lock:
                self.streams_closed += 1

    def moderate(self, prompt: str, response: str | None = None) -> ClassifierScore:
        text = f"{prompt} {response or ''}".lower()
        score = math.nan if "NAN" in prompt else 0.96 if "nerve agent" in text else 0.6 if "lock" in text else 0.02
        thresholds = Thresholds(allow=0.5, block=0.9)
        verdict = thresholds.verdict(score)
        label = "unsafe" if verdict != Verdict.ALLOW else "safe"
        categories = {"weapons_cbrn": score, "violent_crime": score / 4, "not_a_category": 1.0}
        return ClassifierScore(score, verdict, thresholds, label, categories=categories)


class KeywordClassifier:
    """Stand-in second stage: unsafe exactly when the exchange mentions a nerve agent."""

    kind = "keyword"
    thresholds = Thresholds(allow=0.5, block=0.5)

    def score(self, prompt: str, response: str | None = None) -> ClassifierScore:
        unsafe = "nerve agent" in f"{prompt} {response or ''}".lower()
        score = 0.99 if unsafe else 0.01
        categories = {"weapons_cbrn": score}
        return ClassifierScore(score, self.thresholds.verdict(score), self.thresholds, "unsafe" if unsafe else "safe",
                               categories=categories)

    def score_batch(self, items):
        return [self.score(p, r) for p, r in items]


def quiet_probe(model_id: str, num_layers: int, hidden_size: int) -> LinearProbe:
    """An untrained probe on the last layer whose bias keeps every token far below the escalation threshold."""
    config = ProbeConfig(model_id=model_id, hidden_size=hidden_size, layers=[num_layers])
    return LinearProbe(config, torch.zeros(1, hidden_size), torch.tensor([-8.0]))


def real_guard(model: str) -> Guard:
    lm = load_causal_lm(model, device=DEVICE)
    return Guard(lm, quiet_probe(model, lm.num_layers, lm.hidden_size), classifier=KeywordClassifier())


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
