"""The gateway's per-request telemetry: request id (accepted or created), metrics per route and mode, one log line."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from fashion_search.core.observability import LATENCY_BUCKETS, accept_request_id, bind_request_id
from fashion_search.gateway.auth import RATE_STATE

log = structlog.get_logger("fashion_search.http")

HTTP_REQUESTS = Counter(
    "fs_http_requests_total", "HTTP requests answered, by route template, mode and status",
    ["method", "route", "mode", "status"],
)
HTTP_LATENCY = Histogram(
    "fs_http_request_seconds", "HTTP answer time by route template and mode", ["method", "route", "mode"],
    buckets=LATENCY_BUCKETS,
)
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes would drown the log


def install_telemetry(app: FastAPI) -> None:
    """Add the middleware; it runs outside the routes, so it sees 401/403/429 answers too."""

    @app.middleware("http")
    async def telemetry(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = accept_request_id(request.headers.get("x-request-id"))
        unbind = bind_request_id(request_id)
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            for name, value in getattr(request.state, RATE_STATE, {}).items():
                response.headers.setdefault(name, value)
            return response
        finally:
            elapsed = time.perf_counter() - start
            # The route template keeps the label set small; 404s and the docs pages (no API route) share two labels.
            route = getattr(request.scope.get("route"), "path", None) or ("<unmatched>" if status == 404 else "<other>")
            mode = getattr(request.state, "mode", "")
            HTTP_REQUESTS.labels(request.method, route, mode, str(status)).inc()
            HTTP_LATENCY.labels(request.method, route, mode).observe(elapsed)
            if route not in QUIET_ROUTES:
                log.info("http", method=request.method, route=route, mode=mode or None, status=status,
                         duration_ms=round(elapsed * 1000, 2), key=getattr(request.state, "api_key_name", None))
            unbind()
