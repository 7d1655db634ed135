"""Load limits: a bounded worker pool with a bounded admission queue, and a request-body size and time cap."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from constitutional_guard.serve.errors import APIError, body_timed_out, overloaded

T = TypeVar("T")


class Admission:
    """One admitted request's place in the server; release it exactly once when the request ends."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._worker._admitted -= 1


class Worker:
    """Runs blocking guard work on ``max_concurrent`` threads; at most ``max_queued`` more requests wait.

    A slot is held until the thread finishes, so work abandoned by a departed client still counts
    until it has actually stopped.
    """

    JOB_SECONDS_SMOOTHING = 0.2
    """Weight of the newest job in the running mean of job durations (for ``Retry-After``)."""

    def __init__(self, max_concurrent: int, max_queued: int) -> None:
        self.max_concurrent = max_concurrent
        self.capacity = max_concurrent + max_queued
        self._executor = ThreadPoolExecutor(max_concurrent, thread_name_prefix="cguard-worker")
        self._slots: asyncio.Semaphore | None = None
        self._admitted = 0
        self.running = 0
        self._cancels: set[threading.Event] = set()
        self._stopping = False
        self.mean_job_s: float | None = None
        """Running mean of how long a job held its thread; None before the first one finished."""

    @property
    def queued(self) -> int:
        return max(0, self._admitted - self.running)

    def admit(self) -> Admission:
        """Take a place or raise 429 when every worker is busy and the queue is full."""
        if self._admitted >= self.capacity:
            raise overloaded(self.retry_after_s())
        self._admitted += 1
        return Admission(self)

    def retry_after_s(self) -> int:
        """Seconds until the admitted work is likely done: mean job time × admitted jobs ÷ threads (1 s to 1 h)."""
        if self.mean_job_s is None:
            return 1
        return max(1, min(3600, math.ceil(self.mean_job_s * self._admitted / self.max_concurrent)))

    def _job_took(self, seconds: float) -> None:
        weight = self.JOB_SECONDS_SMOOTHING
        self.mean_job_s = seconds if self.mean_job_s is None else (1 - weight) * self.mean_job_s + weight * seconds

    async def run(self, fn: Callable[[threading.Event], T]) -> asyncio.Future[T]:
        """Wait for a free thread, start ``fn(cancel)`` there and return its future (it may outlive the caller)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        slots = self._slots
        await slots.acquire()
        cancel = threading.Event()
        if self._stopping:
            cancel.set()
        self._cancels.add(cancel)
        self.running += 1
        started = time.perf_counter()

        def _done(_: Any) -> None:
            self.running -= 1
            self._cancels.discard(cancel)
            self._job_took(time.perf_counter() - started)
            slots.release()

        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, cancel)
        future.add_done_callback(_done)
        return future

    @property
    def stopping(self) -> bool:
        """True once ``stop_jobs`` was called: jobs end early, so missing results mean the server is stopping."""
        return self._stopping

    def stop_jobs(self) -> None:
        """Ask every running job, and every job started from now on, to stop after its current step."""
        self._stopping = True
        for cancel in list(self._cancels):
            cancel.set()

    def shutdown(self) -> None:
        """Stop every job and stop accepting new ones."""
        self.stop_jobs()
        self._executor.shutdown(wait=False, cancel_futures=True)


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "invalid_request_error", f"request body exceeds {limit} bytes", code="body_too_large")


class BodyLimitMiddleware:
    """Answer 413 when ``Content-Length`` or the bytes actually received exceed ``max_bytes``, and 408 when the
    whole body has not arrived ``timeout_s`` after the request started."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            error = BodyTooLarge(self.max_bytes) if length.isdigit() else APIError(
                400, "invalid_request_error", "invalid Content-Length header")
            await error.response()(scope, receive, send)
            return
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body only a disconnect can come, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                raise body_timed_out(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
