"""POST /v1/search: a photo in, matching products out (cached in Redis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from prometheus_client import Counter, Histogram

from fashion_search.core.domain import PRODUCT_ID_PATTERN
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.gateway.cache import SearchCache
from fashion_search.gateway.convert import search_out
from fashion_search.gateway.deps import get_cache, get_pipeline, get_settings
from fashion_search.gateway.responses import NOT_FOUND, UPLOAD
from fashion_search.gateway.schemas import Mode, SearchOut
from fashion_search.gateway.uploads import read_upload
from fashion_search.pipeline.search_pipeline import SearchPipeline

router = APIRouter(prefix="/v1", tags=["search"])

SEARCHES = Counter("fs_searches_total", "Search requests", ["mode", "cached"])
STAGE_MS = Histogram(
    "fs_search_stage_ms", "Search stage latency (ms)", ["mode", "stage"],
    buckets=(5, 10, 20, 40, 80, 150, 300, 600, 1200, 2500, 5000),
)

@router.post("/search", response_model=SearchOut, responses={**UPLOAD, **NOT_FOUND})
def search(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    cache: Annotated[SearchCache, Depends(get_cache)],
    mode: Annotated[Mode, Form(description="simple: whole image; fine: per garment; tag: category filter")] = "simple",
    top_k: Annotated[
        int | None,
        Form(ge=1, description="results per list, at most the server's FS_MAX_TOP_K; default FS_DEFAULT_TOP_K")
    ] = None,
    category: Annotated[str | None, Form(description="only products of this category")] = None,
    image: Annotated[
        UploadFile | None, File(description="the shopper's photo (JPEG, PNG, WebP); or send product_id")
    ] = None,
    product_id: Annotated[
        str | None,
        Form(pattern=PRODUCT_ID_PATTERN, description="search with this catalog product's photo instead of an upload "
             "(\"more like this\")"),
    ] = None,
) -> SearchOut:
    """Find catalog products that look like the photo."""
    if request.query_params:
        # A mode sent as ?mode=fine would otherwise be ignored silently and answered in simple mode.
        names = ", ".join(sorted(request.query_params))
        raise HTTPException(422, f"send the fields as multipart form fields, not in the query string: {names}")
    k = settings.default_top_k if top_k is None else top_k
    if not 1 <= k <= settings.max_top_k:
        raise HTTPException(422, f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    category = (category or "").strip() or None
    data = _query_photo(image, product_id, pipeline, settings)
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
    out = search_out(outcome, version, settings)
    for stage, ms in outcome.timings_ms.items():
        STAGE_MS.labels(mode, stage).observe(ms)
    SEARCHES.labels(mode, "false").inc()
    if outcome.degraded is None:  # a degraded answer must not outlive the outage
        cache.put(key, out.model_dump_json())
    return out


def _query_photo(
    image: UploadFile | None, product_id: str | None, pipeline: SearchPipeline, settings: Settings
) -> bytes:
    """The query photo's bytes: the upload, or the stored photo of product_id (404 if unknown or without one)."""
    if (image is None) == (product_id is None):
        raise HTTPException(422, "send either an image or a product_id")
    if image is not None:
        return read_upload(image, settings)
    product = pipeline.index.get(product_id)
    if product is None:
        raise HTTPException(404, f"unknown product {product_id!r}")
    path = Path(product.image_ref)
    if not product.image_ref or not path.is_file():
        raise HTTPException(404, f"product {product_id!r} has no stored image")
    return path.read_bytes()
