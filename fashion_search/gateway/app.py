"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from prometheus_client import make_asgi_app

from fashion_search.core.settings import Settings, get_settings
from fashion_search.gateway.cache import SearchCache
from fashion_search.gateway.errors import install_error_handlers
from fashion_search.gateway.routes import health, ingest, products, search
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


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
    install_error_handlers(app)
    app.include_router(search.router)
    app.include_router(products.router)
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.mount("/metrics", make_asgi_app())

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
