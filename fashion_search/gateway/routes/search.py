"""POST /v1/search: a photo in, matching products out (cached in Redis)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from prometheus_client import Counter, Histogram

from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.gateway.auth import requires
from fashion_search.gateway.cache import SearchCache
from fashion_search.gateway.convert import search_out
from fashion_search.gateway.deps import get_cache, get_pipeline, get_settings
from fashion_search.gateway.responses import ACCESS, UPLOAD
from fashion_search.gateway.schemas import Mode, SearchOut
from fashion_search.gateway.uploads import read_upload
from fashion_search.pipeline.search_pipeline import SearchPipeline

router = APIRouter(prefix="/v1", tags=["search"], responses=ACCESS)

SEARCHES = Counter("fs_searches_total", "Search requests", ["mode", "cached"])
STAGE_MS = Histogram(
    "fs_search_stage_ms", "Search stage latency (ms)", ["mode", "stage"],
    buckets=(5, 10, 20, 40, 80, 150, 300, 600, 1200, 2500, 5000),
)

@router.post("/search", response_model=SearchOut, responses=UPLOAD, dependencies=[requires("search")])
def search(
    request: Request,
    image: Annotated[UploadFile, File(description="the shopper's photo (JPEG, PNG, WebP)")],
    settings: Annotated[Settings, Depends(get_settings)],
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    cache: Annotated[SearchCache, Depends(get_cache)],
    mode: Annotated[Mode, Form(description="simple: whole image; fine: per garment; tag: category filter")] = "simple",
    top_k: Annotated[
        int | None,
        Form(ge=1, description="results per list, at most the server's FS_MAX_TOP_K; default FS_DEFAULT_TOP_K")
    ] = None,
    category: Annotated[str | None, Form(description="only products of this category")] = None,
) -> SearchOut:
    """Find catalog products that look like the photo."""
    request.state.mode = mode  # the telemetry middleware labels the request's metrics with it
    if request.query_params:
        # A mode sent as ?mode=fine would otherwise be ignored silently and answered in simple mode.
        names = ", ".join(sorted(request.query_params))
        raise HTTPException(422, f"send the fields as multipart form fields, not in the query string: {names}")
    k = settings.default_top_k if top_k is None else top_k
    if not 1 <= k <= settings.max_top_k:
        raise HTTPException(422, f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    category = (category or "").strip() or None
    data = read_upload(image, settings)
    img = decode_image(data, settings)
    # Only the version: stats() counts points and facets categories and embedders, too slow for every query.
    version = pipeline.index.version
    # An unreachable model gives "": the search below meets the same outage and answers for it (uncached).
    key = cache.key(data, mode, k, category, version, pipeline.ranking(mode), pipeline.models_used(mode))
    start = time.perf_counter()
    if (hit := cache.get(key)) is not None:
        out = SearchOut.model_validate_json(hit)
        out.cached = True
        out.took_ms = round((time.perf_counter() - start) * 1000.0, 2)
        SEARCHES.labels(mode, "true").inc()
        return out
    outcome = pipeline.search(img, mode, k, category)
    out = search_out(outcome, version)
    for stage, ms in outcome.timings_ms.items():
        STAGE_MS.labels(mode, stage).observe(ms)
    SEARCHES.labels(mode, "false").inc()
    if outcome.degraded is None:  # a degraded answer must not outlive the outage
        cache.put(key, out.model_dump_json())
    return out
