"""Bridge from the blocking guard to the event loop: events cross from a worker thread, stopping works both ways."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, Protocol, TypeVar

from starlette.requests import Request

from constitutional_guard.guard.events import GenerationConfig, GuardEvent
from constitutional_guard.serve.errors import ClientGone
from constitutional_guard.serve.limits import Worker

T = TypeVar("T")


class ServedGuard(Protocol):
    """What the server needs from a guard (``constitutional_guard.guard.Guard`` provides it).

    Optional: ``model_id`` (the name in responses; else ``lm.name``), ``lm`` (a ``LoadedModel``,
    used to count prompt tokens against the limit) and ``list_models()`` (a remote engine's models for
    ``/v1/models``, or None).
    """

    constitution: Any

    def stream(self, messages: list[dict[str, str]], config: GenerationConfig) -> Iterator[GuardEvent]: ...

    def moderate(self, prompt: str, response: str | None = None) -> Any: ...


class GuardFailed(Exception):
    """The guard raised inside the worker thread; ``__cause__`` is the original exception."""


_END = object()


class GuardRun:
    """One guarded generation on a worker thread, its events handed to the event loop.

    ``stop()`` (or the worker's shutdown) makes the thread close the guard's generator after the
    event it is computing, which stops generation within one token. Read events with ``next()``.
    """

    def __init__(self, guard: ServedGuard, messages: list[dict[str, str]], config: GenerationConfig) -> None:
        self._guard = guard
        self._messages = messages
        self._config = config
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self.done: asyncio.Future[None] | None = None

    async def start(self, worker: Worker) -> None:
        """Wait for a worker thread and start generating there."""
        self.done = await worker.run(self._generate)

    def stop(self) -> None:
        self._stop.set()

    def _put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _generate(self, shutdown: threading.Event) -> None:
        stream = None
        try:
            if self._stop.is_set() or shutdown.is_set():
                return
            stream = self._guard.stream(self._messages, self._config)
            for event in stream:
                self._put(event)
                if self._stop.is_set() or shutdown.is_set():
                    break
        except Exception as exc:
            failure = GuardFailed(str(exc))
            failure.__cause__ = exc
            self._put(failure)
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()
            self._put(_END)

    async def next(self) -> GuardEvent | None:
        """The next event, or None after the last; raises GuardFailed if the guard raised."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            return None
        if isinstance(item, GuardFailed):
            raise item
        return item


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientGone."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone()
