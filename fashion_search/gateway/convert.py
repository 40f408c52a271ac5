"""Domain objects → API response models."""

from __future__ import annotations

from urllib.parse import quote

from fashion_search.core.domain import Hit, Product
from fashion_search.core.settings import Settings
from fashion_search.gateway.schemas import GarmentOut, ProductOut, ResultOut, SearchOut
from fashion_search.pipeline.kinds import match_band, match_confidence
from fashion_search.pipeline.search_pipeline import SearchOutcome


def image_url(product: Product) -> str | None:
    """Where the gateway serves the product's photo, if it has one."""
    return f"/v1/products/{quote(product.product_id, safe='')}/image" if product.image_ref else None


def product_out(product: Product) -> ProductOut:
    """A product for the API."""
    return ProductOut(
        product_id=product.product_id, category=product.category, title=product.title, price=product.price,
        tags=product.tags, box=product.box.to_list() if product.box else None, image_url=image_url(product),
        brand=product.brand, in_stock=product.in_stock, attributes=product.attributes,
    )


def result_out(hit: Hit, mode: str, settings: Settings) -> ResultOut:
    """A search hit for the API, with its calibrated match confidence."""
    p = hit.product
    confidence = match_confidence(float(hit.score), mode, settings)
    return ResultOut(
        product_id=p.product_id, score=round(float(hit.score), 5), category=p.category, title=p.title,
        price=p.price, image_url=image_url(p), brand=p.brand, in_stock=p.in_stock, confidence=round(confidence, 3),
        match=match_band(confidence, settings),  # type: ignore[arg-type]
    )


def search_out(outcome: SearchOutcome, version: int, settings: Settings) -> SearchOut:
    """A pipeline outcome for the API."""
    mode = outcome.mode
    return SearchOut(
        mode=mode,  # type: ignore[arg-type]
        took_ms=round(outcome.timings_ms.get("total", 0.0), 2),
        index_version=version,
        image_size=list(outcome.image_size),
        degraded=outcome.degraded,
        results=[result_out(h, mode, settings) for h in outcome.hits],
        garments=[
            GarmentOut(
                box=g.detection.box.to_list(), category=g.detection.category,
                score=round(float(g.detection.score), 4), results=[result_out(h, mode, settings) for h in g.hits],
            )
            for g in outcome.garments
        ],
        timings_ms={k: round(v, 2) for k, v in outcome.timings_ms.items()},
        currency=settings.currency, suggested_mode=outcome.suggested_mode,  # type: ignore[arg-type]
    )
