"""Prometheus metrics of one server: requests, guard outcomes, escalations, load and latency histograms."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
KNOWN_ROUTES = frozenset({"/v1/chat/completions", "/v1/moderations", "/v1/models", "/healthz", "/metrics"})


class ServeMetrics:
    """All metrics in a registry of their own, so several apps can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cguard_http_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("cguard_http_request_duration_seconds",
                                         "Time from request to the last byte of the answer.", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.generations = Counter("cguard_generations", "Guarded generations by outcome "
                                   "(completed, blocked, held, cancelled, timeout, failed).", ["status"], registry=r)
        self.blocks = Counter("cguard_blocks", "Blocked or held answers by endpoint.", ["endpoint"], registry=r)
        self.escalations = Counter("cguard_escalations", "Probe escalations to the second-stage classifier.",
                                   registry=r)
        self.moderations = Counter("cguard_moderations", "Moderated inputs by verdict (allow, uncertain, block), "
                                   "or failed when the check gave no usable score.", ["verdict"], registry=r)
        self.completion_tokens = Counter("cguard_completion_tokens", "Generated tokens.", registry=r)
        self.queue_seconds = Histogram("cguard_queue_wait_seconds", "Wait for a worker thread.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.first_release_seconds = Histogram("cguard_time_to_first_release_seconds",
                                               "From generation start (after queueing) to the first released text.",
                                               buckets=LATENCY_BUCKETS, registry=r)
        self.generation_seconds = Histogram("cguard_generation_duration_seconds",
                                            "Time from the start of generation (after queueing) to its end.",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.running = Gauge("cguard_running", "Jobs running on worker threads.", registry=r)
        self.queued = Gauge("cguard_queued", "Admitted requests waiting for a worker thread.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count every HTTP answer (including ones produced by outer middleware) and time it to its last byte."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        route = scope["path"] if scope["path"] in KNOWN_ROUTES else "other"
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - start)
