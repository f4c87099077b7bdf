"""Prometheus metrics of one server (its own registry): requests by route and status, latency,
batch sizes and forward-pass time per model, queue depth per model, client disconnects; and the
ASGI middleware that counts the requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "MetricsMiddleware"]

#: the HTTP methods counted by name; any other is counted as "other" (labels come from closed sets)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's metrics, in a registry of their own (``registry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dlwp_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "dlwp_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "dlwp_batch_size",
            "Requests per forward pass, by model",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "dlwp_batch_seconds",
            "Time per batch (forward pass and postprocessing)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "dlwp_queue_depth", "Requests waiting for a batch, by model", ["model"], registry=self.registry
        )
        self.rejected = Counter(
            "dlwp_queue_full", "Requests refused with 503 because the queue was full", ["model"], registry=self.registry
        )
        self.closed = Counter(
            "dlwp_connections_closed",
            "Connections the server closed by cause (header or body timeout, too many connections)",
            ["cause"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "dlwp_client_disconnects", "Clients that left before their answer", ["model"], registry=self.registry
        )

    def watch_queue(self, model: str, depth: Callable[[], int]) -> None:
        """Report ``model``'s queue depth by calling ``depth`` at each scrape."""
        self.queue_depth.labels(model).set_function(depth)

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        """The per-batch callback of ``model``'s batcher: its size and how long it took."""
        sizes, seconds = self.batch_size.labels(model), self.batch_seconds.labels(model)

        def on_batch(size: int, elapsed: float) -> None:
            sizes.observe(size)
            seconds.observe(elapsed)

        return on_batch


class MetricsMiddleware:
    """Counts every HTTP request by its route template, method and status, each from a closed set
    (``other`` for an unknown path or method), so that no client can grow the metrics."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            method = scope.get("method", "")
            status_label = str(status[0]) if 100 <= status[0] <= 599 else "other"
            self.metrics.requests.labels(path, method if method in _METHODS else "other", status_label).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
