"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from fashion_search.core.grpc_common import ServiceUnavailable, check_health
from fashion_search.core.settings import Settings
from fashion_search.gateway.cache import SearchCache
from fashion_search.gateway.deps import get_cache, get_pipeline, get_settings
from fashion_search.gateway.schemas import ReadyOut
from fashion_search.pipeline.search_pipeline import SearchPipeline

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz", response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready: the index or a model service is down"}},
)
def readyz(
    settings: Annotated[Settings, Depends(get_settings)],
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    cache: Annotated[SearchCache, Depends(get_cache)],
) -> JSONResponse:
    """Ready when the index answers and every configured model service is SERVING; Redis is optional.

    An index holding vectors of another embedder still answers (ready), flagged "stale" with the reason.
    """
    checks: dict[str, str] = {}
    stale_index: str | None = None
    services = [
        ("detector", settings.detector_url), ("segmenter", settings.segmenter_url),
        ("embedder", settings.embedder_url),
    ]
    if settings.separate_image_embedder:
        services.append(("image_embedder", settings.image_embedder_url))
    for name, url in services:
        checks[name] = "in-process" if not url else ("ok" if check_health(url, settings) else "down")
    try:
        stats = pipeline.index.stats()
        checks["index"] = "ok"
        if stale_index := pipeline.stale_index(stats):
            checks["index"] = "stale"
    except ServiceUnavailable:
        checks["index"] = "down"
    checks["cache"] = "ok" if cache.enabled and cache.ping() else "off"
    ready = all(v != "down" for v in checks.values())
    body = ReadyOut(ready=ready, checks=checks, stale_index=stale_index).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=200 if ready else 503)
