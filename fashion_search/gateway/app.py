"""The FastAPI application factory."""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, Response
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.util.http import parse_excluded_urls
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fashion_search.core.settings import Settings, get_settings
from fashion_search.gateway.auth import Access, requires
from fashion_search.gateway.cache import SearchCache
from fashion_search.gateway.errors import install_error_handlers
from fashion_search.gateway.responses import ACCESS
from fashion_search.gateway.routes import health, ingest, products, search
from fashion_search.gateway.telemetry import install_telemetry
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
# Where the page's search-scope key goes (settings.page_api_key); its script sends it with every call.
PAGE_KEY_META = '<meta name="fs-api-key" content="">'


def create_app(settings: Settings | None = None, pipeline: SearchPipeline | None = None) -> FastAPI:
    """Build the app; the pipeline is built from settings unless given (tests, the embedded demo)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if pipeline is None:
            from fashion_search.pipeline.components import build_pipeline

            app.state.pipeline = build_pipeline(settings)
        else:
            app.state.pipeline = pipeline
        app.state.ingestor = Ingestor(app.state.pipeline, settings)
        app.state.cache = SearchCache(settings)
        app.state.settings = settings
        yield
        if pipeline is None:
            app.state.pipeline.index.close()

    app = FastAPI(
        title="Fashion search",
        version="1.0",
        description="Visual fashion search: upload a photo, get matching catalog products.",
        lifespan=lifespan,
    )
    app.state.access = Access(settings)
    install_error_handlers(app)
    install_telemetry(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
            expose_headers=["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                            "RateLimit-Reset", "RateLimit-Policy"],
        )
    app.include_router(search.router)
    app.include_router(products.router)
    app.include_router(ingest.router)
    app.include_router(health.router)
    # OpenTelemetry's ASGI middleware is what FastAPIInstrumentor installs; its route lookup (0.48, the last release
    # that runs with protobuf 4) cannot read FastAPI 0.141's included routers, so the span is named method + path.
    app.add_middleware(
        OpenTelemetryMiddleware, excluded_urls=parse_excluded_urls("healthz,readyz,metrics"),
        default_span_details=lambda scope: (f"{scope.get('method', 'HTTP')} {scope.get('path', '')}", {}),
    )

    @app.get("/metrics", include_in_schema=False, dependencies=[requires("admin")], responses=ACCESS)
    def metrics() -> Response:
        """This process's Prometheus metrics (Prometheus scrapes FS_GATEWAY_METRICS_PORT, which needs no key)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    page_html = (STATIC / "index.html").read_text(encoding="utf-8").replace(
        PAGE_KEY_META, f'<meta name="fs-api-key" content="{html.escape(settings.page_api_key, quote=True)}">', 1,
    )

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    return app
