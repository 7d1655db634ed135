"""``create_app(guard, settings)``: the FastAPI application with its routers, limits, auth and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from constitutional_guard import __version__
from constitutional_guard.guard.events import SourceError
from constitutional_guard.serve.auth import BearerAuthMiddleware
from constitutional_guard.serve.chat import ChatService
from constitutional_guard.serve.drain import Drain, DrainMiddleware
from constitutional_guard.serve.errors import install_error_handlers, upstream_failed
from constitutional_guard.serve.limits import BodyLimitMiddleware, Worker
from constitutional_guard.serve.metrics import MetricsMiddleware, ServeMetrics
from constitutional_guard.serve.moderation import ModerationService
from constitutional_guard.serve.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    Health,
    ModerationRequest,
    ModerationResponse,
)
from constitutional_guard.serve.runner import ServedGuard
from constitutional_guard.serve.settings import ServeSettings

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 413, 429, 502, 504)}


def chat_router(service: ChatService) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await service.create(body, request)

    return router


def moderation_router(service: ModerationService) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/moderations", response_model=ModerationResponse, responses=ERRORS)
    async def moderations(body: ModerationRequest, request: Request) -> ModerationResponse:
        return await service.create(body, request)

    return router


def ops_router(
    guard: ServedGuard, model_name: str, worker: Worker, metrics: ServeMetrics, drain: Drain
) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Health | JSONResponse:
        health = Health(status="draining" if drain.draining else "ok", model=model_name, running=worker.running,
                        queued=worker.queued)
        return JSONResponse(health.model_dump(), status_code=503) if drain.draining else health

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/v1/models")
    async def models() -> dict:
        upstream = await upstream_models(guard)
        if upstream is not None:
            return {"object": "list", "data": upstream}
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "constitutional-guard"}]}

    return router


async def upstream_models(guard: ServedGuard) -> list[dict] | None:
    """The remote engine's model list when the guard reads one (``guard.list_models``), else None."""
    lister = getattr(guard, "list_models", None)
    if lister is None:
        return None
    try:
        return await asyncio.to_thread(lister)
    except SourceError as exc:
        raise upstream_failed(exc.code, str(exc)) from None


def served_model_name(guard: ServedGuard, settings: ServeSettings) -> str:
    """The configured name, else the guard's ``model_id``, else the name its target model was loaded by."""
    return settings.model_name or getattr(guard, "model_id", None) or guard.lm.name


def create_app(guard: ServedGuard, settings: ServeSettings) -> FastAPI:
    """An OpenAI-compatible app serving ``guard``; every limit and the auth come from ``settings``."""
    model_name = served_model_name(guard, settings)
    worker = Worker(settings.max_concurrent, settings.max_queued)
    drain = Drain(settings.drain_grace_s, worker)
    metrics = ServeMetrics()
    metrics.running.set_function(lambda: worker.running)
    metrics.queued.set_function(lambda: worker.queued)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        worker.shutdown()

    app = FastAPI(title="Constitutional Guard", version=__version__, lifespan=lifespan,
                  summary="Guarded OpenAI-compatible chat completions and moderations.")
    install_error_handlers(app)
    app.include_router(chat_router(ChatService(guard, settings, worker, metrics, model_name)))
    app.include_router(moderation_router(ModerationService(guard, settings, worker, metrics, model_name)))
    app.include_router(ops_router(guard, model_name, worker, metrics, drain))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(DrainMiddleware, drain=drain)
    if settings.auth:
        app.add_middleware(BearerAuthMiddleware, keys=settings.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.worker = worker
    app.state.metrics = metrics
    app.state.drain = drain
    return app
