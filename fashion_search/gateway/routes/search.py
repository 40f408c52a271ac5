"""POST /v1/search: a photo in, matching products out (cached in Redis)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from PIL import Image
from prometheus_client import Counter, Histogram

from fashion_search.core.deadlines import deadline_in
from fashion_search.core.domain import PRODUCT_ID_PATTERN, SearchFilter
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.gateway.auth import requires
from fashion_search.gateway.cache import SearchCache
from fashion_search.gateway.convert import search_out
from fashion_search.gateway.deps import get_cache, get_pipeline, get_settings
from fashion_search.gateway.responses import ACCESS, NOT_FOUND, UPLOAD
from fashion_search.gateway.schemas import Mode, SearchOut
from fashion_search.gateway.uploads import read_upload
from fashion_search.pipeline.search_pipeline import SearchPipeline, UnknownProduct
from fashion_search.services.search.points import check_filter

router = APIRouter(prefix="/v1", tags=["search"], responses=ACCESS)

SEARCHES = Counter("fs_searches_total", "Search requests", ["mode", "cached"])
STAGE_MS = Histogram(
    "fs_search_stage_ms", "Search stage latency (ms)", ["mode", "stage"],
    buckets=(5, 10, 20, 40, 80, 150, 300, 600, 1200, 2500, 5000),
)

@router.post(
    "/search", response_model=SearchOut, responses={**UPLOAD, **NOT_FOUND}, dependencies=[requires("search")],
)
def search(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    cache: Annotated[SearchCache, Depends(get_cache)],
    image: Annotated[
        UploadFile | None, File(description="the shopper's photo (JPEG, PNG, WebP); or give product_id")
    ] = None,
    product_id: Annotated[
        str | None,
        Form(pattern=PRODUCT_ID_PATTERN, description='"more like this": a catalog product in place of the photo'),
    ] = None,
    mode: Annotated[Mode, Form(description="simple: whole image; fine: per garment; tag: category filter")] = "simple",
    top_k: Annotated[
        int | None,
        Form(ge=1, description="results per page, at most the server's FS_MAX_TOP_K; default FS_DEFAULT_TOP_K")
    ] = None,
    offset: Annotated[
        int, Form(ge=0, description="results to skip (pages of top_k), at most the server's FS_MAX_SEARCH_OFFSET")
    ] = 0,
    category: Annotated[list[str] | None, Form(description="only these categories (repeatable: any of)")] = None,
    min_price: Annotated[float | None, Form(ge=0, allow_inf_nan=False, description="lowest price")] = None,
    max_price: Annotated[float | None, Form(ge=0, allow_inf_nan=False, description="highest price")] = None,
    brand: Annotated[list[str] | None, Form(description="only these brands (repeatable: any of)")] = None,
    in_stock: Annotated[bool | None, Form(description="true: only products in stock; false: only sold out")] = None,
    tags: Annotated[list[str] | None, Form(description="only products with all these tags (repeatable)")] = None,
) -> SearchOut:
    """Find catalog products that look like the photo (or like a catalog product), one page within the filters."""
    request.state.mode = mode  # the telemetry middleware labels the request's metrics with it
    if request.query_params:
        # A mode sent as ?mode=fine would otherwise be ignored silently and answered in simple mode.
        names = ", ".join(sorted(request.query_params))
        raise HTTPException(422, f"send the fields as multipart form fields, not in the query string: {names}")
    if (image is None) == (product_id is None):
        raise HTTPException(422, "image: give either an image or a product_id, not both and not neither")
    k = settings.default_top_k if top_k is None else top_k
    if not 1 <= k <= settings.max_top_k:
        raise HTTPException(422, f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    if offset > settings.max_search_offset:
        raise HTTPException(422, f"offset must be between 0 and {settings.max_search_offset}, got {offset}")
    filters = check_filter(SearchFilter(
        categories=_values(category), min_price=min_price, max_price=max_price, brands=_values(brand),
        in_stock=in_stock, tags=_values(tags),
    ))
    if image is not None:
        data = read_upload(image, settings)
        img = decode_image(data, settings)
    else:
        data, img = f"product:{product_id}".encode(), None
    # Every call on this search's way (Info, version, models, index) gets what is left of one budget.
    with deadline_in(settings.request_deadline_s):
        return _search(img, data, product_id, mode, k, filters, offset, pipeline, cache)


def _search(
    img: Image.Image | None, data: bytes, product_id: str | None, mode: str, k: int, filters: SearchFilter | None,
    offset: int, pipeline: SearchPipeline, cache: SearchCache,
) -> SearchOut:
    """The cached answer, or the pipeline's (cached when not degraded)."""
    # Only the version: stats() counts points and facets categories and embedders, too slow for every query.
    version = pipeline.index.version
    # An unreachable model gives "": the search below meets the same outage and answers for it (uncached).
    key = cache.key(
        data, mode, k, None, version, pipeline.ranking(mode), pipeline.models_used(mode),
        query=f"{filters.key() if filters else ''}@{offset}",
    )
    start = time.perf_counter()
    if (hit := cache.get(key)) is not None:
        out = SearchOut.model_validate_json(hit)
        out.cached = True
        out.took_ms = round((time.perf_counter() - start) * 1000.0, 2)
        SEARCHES.labels(mode, "true").inc()
        return out
    if img is not None:
        outcome = pipeline.search(img, mode, k, filters=filters, offset=offset)
    else:
        try:
            outcome = pipeline.search_like(str(product_id), mode, k, filters=filters, offset=offset)
        except UnknownProduct:
            raise HTTPException(404, f"unknown product {product_id!r}") from None
    out = search_out(outcome, version, pipeline.settings)
    for stage, ms in outcome.timings_ms.items():
        STAGE_MS.labels(mode, stage).observe(ms)
    SEARCHES.labels(mode, "false").inc()
    if outcome.degraded is None:  # a degraded answer must not outlive the outage
        cache.put(key, out.model_dump_json())
    return out


def _values(given: list[str] | None) -> tuple[str, ...]:
    """A repeatable form field's values, blank ones dropped."""
    return tuple(v.strip() for v in given or () if v.strip())
