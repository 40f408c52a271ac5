"""Catalog products: add one (with its photo), read, delete, and serve its photo."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Response, UploadFile
from fastapi.responses import FileResponse

from fashion_search.core.catalog import CatalogError, parse_attributes
from fashion_search.core.domain import PRODUCT_ID_PATTERN, PRODUCT_ID_RULE, Product
from fashion_search.core.images import stored_image_type
from fashion_search.core.settings import Settings
from fashion_search.gateway.auth import requires
from fashion_search.gateway.convert import product_out
from fashion_search.gateway.deps import get_ingestor, get_pipeline, get_settings
from fashion_search.gateway.responses import (
    ACCESS,
    INVALID,
    NOT_FOUND,
    PATCH_RESPONSES,
    PHOTO,
    UNAVAILABLE,
    UPLOAD,
    error,
)
from fashion_search.gateway.schemas import ProductOut, ProductPage, ProductPatch, StatsOut
from fashion_search.gateway.uploads import read_upload
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline

router = APIRouter(prefix="/v1", tags=["products"], responses=ACCESS)

# The id rule is in the schema, so FastAPI refuses a bad id (422) before a route runs.
ProductId = Annotated[str, Path(pattern=PRODUCT_ID_PATTERN, description=PRODUCT_ID_RULE)]


def _product_or_404(pipeline: SearchPipeline, product_id: str) -> Product:
    product = pipeline.index.get(product_id)
    if product is None:
        raise HTTPException(404, f"unknown product {product_id!r}")
    return product


@router.post(
    "/products", response_model=ProductOut, status_code=201, dependencies=[requires("catalog")],
    responses={**UPLOAD, 409: error("a duplicate of another product's photo, not indexed (FS_DUPLICATE_ACTION=skip)")},
)
def add_product(
    image: Annotated[UploadFile, File(description="product photo")],
    product_id: Annotated[str, Form(pattern=PRODUCT_ID_PATTERN, description=PRODUCT_ID_RULE)],
    settings: Annotated[Settings, Depends(get_settings)],
    ingestor: Annotated[Ingestor, Depends(get_ingestor)],
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    title: Annotated[str, Form()] = "",
    category: Annotated[str, Form(description="empty: taken from the detector")] = "",
    price: Annotated[float, Form(ge=0, allow_inf_nan=False)] = 0.0,
    tags: Annotated[str, Form(description="comma-separated")] = "",
    brand: Annotated[str, Form()] = "",
    in_stock: Annotated[bool, Form(description="whether the product can be bought now")] = True,
    attributes: Annotated[str, Form(description='"name=value; name=value", e.g. "colour=red; material=leather"')] = "",
    images: Annotated[
        list[UploadFile] | None, File(description="more photos of the product (repeatable); each is matched too")
    ] = None,
) -> ProductOut:
    """Index one product (replacing any product with the same id)."""
    try:
        attrs = parse_attributes(attributes, "attributes")
    except CatalogError as exc:
        raise HTTPException(422, str(exc)) from None
    data = [read_upload(f, settings) for f in [image, *(images or [])]]
    payload = {
        "product_id": product_id, "image_path": "", "title": title, "category": category.strip(),
        "price": price, "tags": [t.strip() for t in tags.split(",") if t.strip()], "brand": brand.strip(),
        "in_stock": in_stock, "attributes": attrs,
    }
    report = ingestor.ingest_payloads([payload], [data])
    if report.failed:
        raise HTTPException(400, report.failed[0][1])
    if skipped := [d for d in report.duplicates if d.skipped]:
        d = skipped[0]
        raise HTTPException(409, f"not indexed: {d.kind} duplicate of product {d.duplicate_of!r} (cosine distance "
                                 f"{d.distance:.4f}; FS_DUPLICATE_ACTION=skip)")
    product = pipeline.index.get(product_id)
    if product is None:  # written but not readable back: the index is broken, not the request
        raise HTTPException(503, "product was indexed but cannot be read back; retry")
    return product_out(product)


@router.get(
    "/products", response_model=ProductPage, responses={**INVALID, **UNAVAILABLE},
    dependencies=[requires("search")],
)
def list_products(
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    settings: Annotated[Settings, Depends(get_settings)],
    limit: Annotated[int, Query(ge=1, description="products per page, at most FS_MAX_SCROLL_LIMIT")] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page; omit for the first")] = None,
) -> ProductPage:
    """The catalog page by page, in a stable order (a product updated meanwhile keeps its place)."""
    if limit > settings.max_scroll_limit:
        raise HTTPException(422, f"limit must be between 1 and {settings.max_scroll_limit}, got {limit}")
    try:
        products, next_cursor = pipeline.index.scroll(cursor or None, limit)
    except ValueError as exc:
        raise HTTPException(422, f"cursor: {exc}") from None
    return ProductPage(products=[product_out(p) for p in products], next_cursor=next_cursor)


@router.patch(
    "/products/{product_id}", response_model=ProductOut, responses=PATCH_RESPONSES,
    dependencies=[requires("catalog")],
)
def patch_product(
    product_id: ProductId, patch: ProductPatch, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
) -> ProductOut:
    """Change catalog fields (price, stock, ...) without re-embedding the photo; cached searches are invalidated."""
    fields = patch.model_dump(exclude_unset=True)
    if any(v is None for v in fields.values()):
        raise HTTPException(422, f"{next(k for k, v in fields.items() if v is None)}: may not be null")
    product = pipeline.index.update_fields(product_id, fields)
    if product is None:
        raise HTTPException(404, f"unknown product {product_id!r}")
    return product_out(product)


@router.get(
    "/products/{product_id}", response_model=ProductOut, responses=NOT_FOUND, dependencies=[requires("search")],
)
def get_product(product_id: ProductId, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> ProductOut:
    """One product's catalog data."""
    return product_out(_product_or_404(pipeline, product_id))


@router.get(
    "/products/{product_id}/image", response_class=FileResponse, responses={**PHOTO, **NOT_FOUND},
    dependencies=[requires("search")],
)
def product_image(
    product_id: ProductId, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    photo: Annotated[int, Query(ge=0, description="which photo (0: the main one)")] = 0,
) -> FileResponse:
    """The product's photo (or its photo number `photo`)."""
    product = _product_or_404(pipeline, product_id)
    refs = product.photo_refs
    if photo >= max(1, len(refs)):
        raise HTTPException(404, f"product {product_id!r} has no photo {photo}")
    path = FilePath(refs[photo]) if refs else FilePath("")
    if not refs or not path.is_file():
        raise HTTPException(404, f"product {product_id!r} has no stored image")
    # Catalog photos keep their own format and uploads are stored as .img: the header says which it is.
    return FileResponse(
        path, media_type=stored_image_type(path),
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.delete("/products/{product_id}", status_code=204, responses=NOT_FOUND, dependencies=[requires("catalog")])
def delete_product(product_id: ProductId, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> Response:
    """Remove a product from the index."""
    if pipeline.index.delete([product_id]) == 0:
        raise HTTPException(404, f"unknown product {product_id!r}")
    return Response(status_code=204)


@router.get("/stats", response_model=StatsOut, responses=UNAVAILABLE, dependencies=[requires("search")])
def stats(pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> StatsOut:
    """Collection size, version, known categories and which embedder computed the stored vectors."""
    s = pipeline.index.stats()
    return StatsOut(
        count=s.count, version=s.version, dim=s.dim, backend=s.backend, categories=sorted(s.categories),
        embedders=s.embedders, stale_index=pipeline.stale_index(s),
    )
