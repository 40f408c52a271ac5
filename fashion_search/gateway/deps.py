"""FastAPI dependencies: the objects a route needs, taken from the app state."""

from __future__ import annotations

from fastapi import Request

from fashion_search.core.settings import Settings
from fashion_search.gateway.cache import SearchCache
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline


def get_settings(request: Request) -> Settings:
    """The gateway's settings."""
    return request.app.state.settings


def get_pipeline(request: Request) -> SearchPipeline:
    """The search pipeline (in-process models or remote services)."""
    return request.app.state.pipeline


def get_cache(request: Request) -> SearchCache:
    """The Redis search cache."""
    return request.app.state.cache


def get_ingestor(request: Request) -> Ingestor:
    """The ingestor used for single-product uploads."""
    return request.app.state.ingestor
