"""Catalog products: add one (with its photo), read, delete, and serve its photo."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Response, UploadFile
from fastapi.responses import FileResponse

from fashion_search.domain import Product
from fashion_search.ingest import Ingestor
from fashion_search.pipeline import SearchPipeline
from fashion_search.settings import Settings
from gateway.convert import product_out
from gateway.deps import get_ingestor, get_pipeline, get_settings
from gateway.routes.search import ERRORS
from gateway.schemas import ErrorOut, ProductOut, StatsOut
from gateway.uploads import read_upload

router = APIRouter(prefix="/v1", tags=["products"])

PRODUCT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorOut, "description": "unknown product"}}


def _check_id(product_id: str) -> str:
    if not PRODUCT_ID.fullmatch(product_id):
        raise HTTPException(422, "product_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
    return product_id


def _product_or_404(pipeline: SearchPipeline, product_id: str) -> Product:
    product = pipeline.index.get(_check_id(product_id))
    if product is None:
        raise HTTPException(404, f"unknown product {product_id!r}")
    return product


@router.post("/products", response_model=ProductOut, status_code=201, responses=ERRORS)
def add_product(
    image: Annotated[UploadFile, File(description="product photo")],
    product_id: Annotated[str, Form()],
    settings: Annotated[Settings, Depends(get_settings)],
    ingestor: Annotated[Ingestor, Depends(get_ingestor)],
    pipeline: Annotated[SearchPipeline, Depends(get_pipeline)],
    title: Annotated[str, Form()] = "",
    category: Annotated[str, Form(description="empty: taken from the detector")] = "",
    price: Annotated[float, Form(ge=0)] = 0.0,
    tags: Annotated[str, Form(description="comma-separated")] = "",
) -> ProductOut:
    """Index one product (replacing any product with the same id)."""
    _check_id(product_id)
    data = read_upload(image, settings)
    payload = {
        "product_id": product_id, "image_path": "", "title": title, "category": category.strip(),
        "price": price, "tags": [t.strip() for t in tags.split(",") if t.strip()],
    }
    report = ingestor.ingest_payloads([payload], [data])
    if report.failed:
        raise HTTPException(400, report.failed[0][1])
    product = pipeline.index.get(product_id)
    if product is None:  # written but not readable back: the index is broken, not the request
        raise HTTPException(503, "product was indexed but cannot be read back; retry")
    return product_out(product)


@router.get("/products/{product_id}", response_model=ProductOut, responses=NOT_FOUND)
def get_product(product_id: str, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> ProductOut:
    """One product's catalog data."""
    return product_out(_product_or_404(pipeline, product_id))


@router.get("/products/{product_id}/image", response_class=FileResponse, responses=NOT_FOUND)
def product_image(product_id: str, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> FileResponse:
    """The product's photo."""
    product = _product_or_404(pipeline, product_id)
    path = Path(product.image_ref)
    if not product.image_ref or not path.is_file():
        raise HTTPException(404, f"product {product_id!r} has no stored image")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


@router.delete("/products/{product_id}", status_code=204, responses=NOT_FOUND)
def delete_product(product_id: str, pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> Response:
    """Remove a product from the index."""
    if pipeline.index.delete([_check_id(product_id)]) == 0:
        raise HTTPException(404, f"unknown product {product_id!r}")
    return Response(status_code=204)


@router.get("/stats", response_model=StatsOut)
def stats(pipeline: Annotated[SearchPipeline, Depends(get_pipeline)]) -> StatsOut:
    """Collection size, version, known categories and which embedder computed the stored vectors."""
    s = pipeline.index.stats()
    return StatsOut(
        count=s.count, version=s.version, dim=s.dim, backend=s.backend, categories=sorted(s.categories),
        embedders=s.embedders, stale_index=pipeline.stale_index(s),
    )
