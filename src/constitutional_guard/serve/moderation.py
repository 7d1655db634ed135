"""``POST /v1/moderations``: the guard's classifier on texts or exchanges, answered in OpenAI's shape."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from typing import Any

from starlette.requests import Request

from constitutional_guard.guard.events import GuardErrorCode
from constitutional_guard.serve.errors import guard_failed, invalid_request, shutting_down, timed_out
from constitutional_guard.serve.limits import Worker
from constitutional_guard.serve.metrics import ServeMetrics
from constitutional_guard.serve.protocol import (
    Exchange,
    GuardErrorInfo,
    ModerationRequest,
    ModerationResponse,
    ModerationResult,
)
from constitutional_guard.serve.runner import ServedGuard, unless_disconnected
from constitutional_guard.serve.settings import ServeSettings

logger = logging.getLogger(__name__)
CATEGORY_FLAG_SCORE = 0.5
"""A category is marked in ``categories`` when the input is flagged and the category scores at least this."""


def moderation_result(verdict: Any, harmful: list[str]) -> ModerationResult:
    """One classifier score as a moderation result; category names are the constitution's harmful ones.

    Per-category scores come from ``verdict.categories`` when the classifier reports them; categories it
    does not report are left out rather than guessed.
    """
    reported = getattr(verdict, "categories", None) or {}
    scores = {name: float(reported[name]) for name in harmful if name in reported}
    if not all(math.isfinite(value) for value in (float(verdict.score), *scores.values())):
        return failed_result(f"the classifier scored {float(verdict.score)} (categories {scores})", str(verdict.label))
    flagged = verdict.verdict != "allow"
    return ModerationResult(
        flagged=flagged,
        categories={name: flagged and score >= CATEGORY_FLAG_SCORE for name, score in scores.items()},
        category_scores=scores,
        verdict=str(verdict.verdict),
        score=float(verdict.score),
        label=str(verdict.label),
    )


def failed_result(message: str, label: str) -> ModerationResult:
    """A check that gave no usable score fails closed: flagged, ``uncertain``, with the reason."""
    return ModerationResult(flagged=True, categories={}, category_scores={}, verdict="uncertain", score=None,
                            label=label, error=GuardErrorInfo(code=GuardErrorCode.NON_FINITE_SCORE, message=message))


class ModerationService:
    """Scores inputs with ``guard.moderate`` on a worker thread, within the server's limits."""

    def __init__(self, guard: ServedGuard, settings: ServeSettings, worker: Worker, metrics: ServeMetrics,
                 model_name: str) -> None:
        self.guard = guard
        self.settings = settings
        self.worker = worker
        self.metrics = metrics
        self.model_name = model_name
        self.harmful = list(guard.constitution.harmful_names)

    def _check(self, items: list[Exchange]) -> None:
        if not items:
            raise invalid_request("input is empty", "input")
        if len(items) > self.settings.max_moderation_inputs:
            raise invalid_request(
                f"{len(items)} inputs exceed the limit of {self.settings.max_moderation_inputs}", "input")
        for i, item in enumerate(items):
            chars = len(item.prompt) + len(item.response or "")
            if chars > self.settings.max_prompt_chars:
                raise invalid_request(
                    f"input[{i}] holds {chars} characters, over the limit of {self.settings.max_prompt_chars}",
                    f"input[{i}]")

    async def create(self, body: ModerationRequest, request: Request) -> ModerationResponse:
        items = body.items()
        self._check(items)
        request_id = f"modr-{uuid.uuid4().hex}"
        admission = self.worker.admit()
        try:
            verdicts = await unless_disconnected(request, self._score(items, request_id))
        finally:
            admission.release()
        results = [moderation_result(v, self.harmful) for v in verdicts]
        for i, result in enumerate(results):
            if result.error is not None:
                logger.warning("%s: input[%d]: guard failed closed (%s): %s", request_id, i, result.error.code,
                               result.error.message)
            self.metrics.moderations.labels("failed" if result.error else result.verdict).inc()
            if result.flagged and result.error is None:
                self.metrics.blocks.labels("moderation").inc()
        return ModerationResponse(id=request_id, model=self.model_name, results=results)

    async def _score(self, items: list[Exchange], request_id: str) -> list[Any]:
        stop = threading.Event()

        def work(shutdown: threading.Event) -> list[Any]:
            out = []
            for item in items:
                if stop.is_set() or shutdown.is_set():
                    break
                out.append(self.guard.moderate(item.prompt, item.response))
            return out

        queued = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_s
        try:
            future = await asyncio.wait_for(self.worker.run(work), self.settings.request_timeout_s)
            self.metrics.queue_seconds.observe(time.perf_counter() - queued)
            verdicts = await asyncio.wait_for(asyncio.shield(future), deadline - loop.time())
        except TimeoutError:
            raise timed_out(self.settings.request_timeout_s) from None
        except Exception as exc:
            raise guard_failed(exc, request_id) from None
        finally:
            stop.set()
        if len(verdicts) < len(items):  # the server stopped the work part-way
            raise shutting_down()
        return verdicts
