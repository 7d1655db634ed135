"""A client that leaves mid-stream ends its generation as cancelled, never as failed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from constitutional_guard.guard.events import GuardEvent, TextReleased
from constitutional_guard.serve.chat import ChatService, CompletionState, StreamEnd
from constitutional_guard.serve.limits import Worker
from constitutional_guard.serve.metrics import ServeMetrics
from constitutional_guard.serve.settings import ServeSettings


class StoppableRun:
    """A generation whose events end, without ``Finished``, once it is stopped (as on a disconnect)."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    def stop(self) -> None:
        self.stopped.set()

    async def next(self) -> GuardEvent | None:
        await self.stopped.wait()
        return None


class GoneRequest:
    async def receive(self) -> dict[str, str]:
        return {"type": "http.disconnect"}


def test_disconnect_mid_stream_is_recorded_as_cancelled() -> None:
    async def stream() -> tuple[list[str], list[str]]:
        run, worker, outcomes = StoppableRun(), Worker(1, 0), []
        guard = SimpleNamespace(constitution=SimpleNamespace(hold_notice="held"))
        service = ChatService(guard, ServeSettings(auth=False), worker, ServeMetrics(), "guarded")
        end = StreamEnd(run, worker.admit(), outcomes.append)
        deadline = asyncio.get_running_loop().time() + 10
        chunks = [chunk async for chunk in service._sse(run, CompletionState(id="c", model="guarded"),
                                                         TextReleased("Hi", 0, 0), deadline, end, GoneRequest(),
                                                         False)]
        worker.shutdown()
        return chunks, outcomes

    chunks, outcomes = asyncio.run(stream())
    assert outcomes == ["cancelled"]
    assert not any('"error"' in chunk for chunk in chunks), "no error is written to a client that left"
