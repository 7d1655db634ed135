"""Graceful shutdown: on SIGTERM the server drains (503 for new work) while requests in flight finish.

Streams still open when the grace period ends are stopped and end with an error chunk and ``[DONE]``;
only then does uvicorn close its sockets.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from constitutional_guard.serve.errors import shutting_down
from constitutional_guard.serve.limits import Worker

UNTRACKED_PATHS = frozenset({"/healthz", "/metrics"})
"""Answered while draining and not waited for."""
POLL_S = 0.05
STOPPED_STREAMS_WAIT_S = 5.0
"""After the grace period, how long stopped streams get to send their last chunk."""


class Drain:
    """Counts requests in flight; once ``begin`` is called, new ones are refused."""

    def __init__(self, grace_s: float, worker: Worker) -> None:
        self.grace_s = grace_s
        self.worker = worker
        self.draining = False
        self.in_flight = 0

    def begin(self) -> None:
        self.draining = True

    async def _idle_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        return not self.in_flight

    async def run(self) -> None:
        """Refuse new work, let requests in flight finish within the grace period, then stop the rest."""
        self.begin()
        if not await self._idle_within(self.grace_s):
            self.worker.stop_jobs()
            await self._idle_within(STOPPED_STREAMS_WAIT_S)


class DrainMiddleware:
    """Track requests in flight; while draining, answer new ones (except health and metrics) with 503."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACKED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await shutting_down().response()(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn that drains ``drain`` on the first SIGTERM / SIGINT before shutting down; a second one exits now."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Future[None] | None = None
        """Holds the drain task so it is not garbage-collected while it runs."""

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler (also safe to call from another thread)."""
        if self.drain.draining or self._loop is None or not self.started:
            super().handle_exit(sig, frame)
            return
        self.drain.begin()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        async def drain_then_exit() -> None:
            try:
                await self.drain.run()
            finally:
                self.should_exit = True

        self._draining = asyncio.ensure_future(drain_then_exit())


def serve_app(app: FastAPI, host: str, port: int, log_level: str) -> None:
    """Run an app from ``create_app`` on uvicorn until SIGTERM / SIGINT, then drain it gracefully."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    DrainingServer(config, app.state.drain).run()
