"""What every index backend stores and accepts: product point ids and payloads, vector layouts, argument checks.

Both backends (Qdrant Edge in-process, qdrant-client for a server) use these, so they accept and refuse exactly the
same input and store the same payload; this module needs neither Qdrant package.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fashion_search.core.domain import (
    EDITABLE_FIELDS,
    GARMENT_VECTOR,
    VECTOR_NAMES,
    Box,
    Hit,
    IndexLayoutError,
    Product,
    SearchFilter,
    SearchQuery,
    check_new_product_id,
)
from fashion_search.core.settings import Settings

# Product id → point id mapping; changing the namespace would orphan every point already stored.
PRODUCT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:fashion-search:product")
# Payload fields filtered or looked up by exact value.
CATEGORY_FIELD = "category"
PRODUCT_ID_FIELD = "product_id"
EMBEDDER_FIELD = "embedder"
# A fresh random stamp on every write of a point, for compare-and-set replacement (replace_unchanged).
REVISION_FIELD = "revision"
PRICE_FIELD = "price"
BRAND_FIELD = "brand"
# Stored as 1/0: Qdrant Edge (0.9) turns a bool match value into an integer that never matches a stored bool.
IN_STOCK_FIELD = "in_stock"
TAGS_FIELD = "tags"
ATTRIBUTES_FIELD = "attributes"
# Which photo of its product a point is (0: the main photo, the one point listings and lookups read).
PHOTO_FIELD = "photo"
IMAGES_FIELD = "images"
# Title, brand, tags and attribute values as one text, ranked by BM25 for searches with words.
TEXT_FIELD = "text"
# Every payload field a search filters on or a lookup matches, with the kind of index each needs. Unique values
# (ids, model names) get no per-value HNSW sub-graphs: they would cost indexing time for nothing.
PAYLOAD_INDEXES: dict[str, str] = {
    CATEGORY_FIELD: "keyword",
    PRODUCT_ID_FIELD: "keyword-unique",
    EMBEDDER_FIELD: "keyword-unique",
    BRAND_FIELD: "keyword",
    TAGS_FIELD: "keyword",
    PRICE_FIELD: "float",
    IN_STOCK_FIELD: "integer",
    PHOTO_FIELD: "integer",
    TEXT_FIELD: "text",
}


def indexes_on_disk(settings: Settings) -> set[str]:
    """The fields whose payload index is memory-mapped from disk (settings.payload_indexes_on_disk), checked."""
    unknown = sorted(set(settings.payload_indexes_on_disk) - set(PAYLOAD_INDEXES))
    if unknown:
        raise ValueError(f"FS_PAYLOAD_INDEXES_ON_DISK names fields without a payload index: {', '.join(unknown)}; "
                         f"indexed fields: {', '.join(PAYLOAD_INDEXES)}")
    return set(settings.payload_indexes_on_disk)


# Reciprocal-rank fusion's k (the usual 60): a result's fused score is the sum of 1 / (k + its rank) per match.
RRF_K = 60

PreparedPoint = tuple[str, dict[str, list[float]], dict[str, Any]]


def point_id(product_id: str, photo: int = 0) -> str:
    """The point id of a product's photo: a UUID5 of its id (and the photo's index past the first), so re-upserting
    a product replaces its points, and a product's first photo keeps the point id of the days of one photo."""
    return str(uuid.uuid5(PRODUCT_ID_NAMESPACE, product_id if photo == 0 else f"{product_id}#photo{photo}"))


def photo_point_ids(product_id: str, photos: range) -> list[str]:
    """The point ids of the given photos of a product."""
    return [point_id(product_id, k) for k in photos]


def check_product_id(product_id: str) -> str:
    """A product id to look up or delete, or ValueError if it is empty (writes check the full id rule)."""
    if not isinstance(product_id, str) or not product_id.strip():
        raise ValueError("product id must be a non-empty string")
    return product_id


def check_vector_name(name: str) -> str:
    """The vector name, or ValueError if the index has no vector of that name."""
    if name not in VECTOR_NAMES:
        raise ValueError(f"unknown vector name {name!r}; expected one of {', '.join(VECTOR_NAMES)}")
    return name


def check_vector(vector: np.ndarray | Sequence[float], dim: int, what: str = "vector") -> list[float]:
    """A finite, non-zero 1-D vector of length dim as a float list, or ValueError."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise ValueError(f"{what} has shape {arr.shape}; expected ({dim},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    # Cosine similarity with a zero vector is undefined; Qdrant would silently score it 0 everywhere.
    if not np.any(arr):
        raise ValueError(f"{what} is all zeros")
    return arr.tolist()


def check_count(value: int, name: str, maximum: int, minimum: int = 1) -> int:
    """An integer within minimum..maximum (bools refused), or ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return int(value)


def check_top_k(top_k: int, settings: Settings) -> int:
    """top_k within 1..settings.max_top_k, or ValueError."""
    return check_count(top_k, "top_k", settings.max_top_k)


def check_expand(expand: int, settings: Settings) -> int:
    """A query-expansion depth within 0 (off)..settings.max_top_k, or ValueError."""
    return check_count(expand, "expand", settings.max_top_k, minimum=0)


def expand_query(query: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Average query expansion (Chum et al., ICCV 2007): query + its nearest stored vectors, at unit length.

    One query (d,) with neighbours (k, d), or a batch (n, d) with (n, k, d); the vectors are unit length, so every
    neighbour counts as much as the query itself.
    """
    query = np.asarray(query, dtype=np.float32)
    out = query / np.linalg.norm(query, axis=-1, keepdims=True) + np.asarray(neighbours, np.float32).sum(axis=-2)
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def check_scroll_limit(limit: int, settings: Settings) -> int:
    """A scroll page size within 1..settings.max_scroll_limit, or ValueError."""
    return check_count(limit, "limit", settings.max_scroll_limit)


def check_scroll_offset(offset: str | None) -> str | None:
    """A scroll cursor (a point id, as a previous page returned it) in canonical form, None for the start."""
    if offset is None or offset == "":
        return None
    try:
        return str(uuid.UUID(str(offset)))
    except ValueError:
        raise ValueError(f"offset {offset!r} is not a cursor returned by scroll") from None


def check_categories(categories: Sequence[str] | None) -> list[str] | None:
    """The category filter as a list, None for no filter (None or empty), or ValueError."""
    if not categories:
        return None
    if isinstance(categories, str):
        # A bare string would otherwise be read as a list of one-letter categories.
        raise ValueError("categories must be a list of strings, not a string")
    cats = list(dict.fromkeys(categories))
    if not all(isinstance(c, str) and c for c in cats):
        raise ValueError("categories must be non-empty strings")
    return cats


def check_offset(offset: int, settings: Settings) -> int:
    """A result offset (the first result of a page) within 0..settings.max_search_offset, or ValueError."""
    return check_count(offset, "offset", settings.max_search_offset, minimum=0)


def _names(values: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"{what} must be a list of strings, not a string")
    names = tuple(dict.fromkeys(values))
    if not all(isinstance(v, str) and v.strip() for v in names):
        raise ValueError(f"{what} must be non-empty strings")
    return names


def _price_bound(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number, 0 or more, got {value!r}")
    return float(value)


def check_filter(filters: SearchFilter | None, categories: Sequence[str] | None = None) -> SearchFilter | None:
    """The search filter with `categories` merged in, None when it matches everything, or ValueError naming the
    field that is wrong."""
    f = filters or SearchFilter()
    if categories and f.categories:
        raise ValueError("categories given twice: as an argument and in the filter")
    cats = check_categories(categories or list(f.categories)) or []
    min_price = _price_bound(f.min_price, "min_price")
    max_price = _price_bound(f.max_price, "max_price")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValueError(f"max_price must not be below min_price, got {max_price:g} < {min_price:g}")
    if f.in_stock is not None and not isinstance(f.in_stock, bool):
        raise ValueError(f"in_stock must be true or false, got {f.in_stock!r}")
    checked = SearchFilter(
        categories=tuple(cats), min_price=min_price, max_price=max_price, brands=_names(f.brands, "brand"),
        in_stock=f.in_stock, tags=_names(f.tags, "tags"),
        exclude=tuple(check_product_id(p) for p in _names(f.exclude, "exclude")),
    )
    return None if checked.is_empty() else checked


def _attributes(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise ValueError(f"{where}: attributes must be a map of names to strings")
    return {str(k): str(v) for k, v in value.items()}


def product_payload(product: Product) -> dict[str, Any]:
    """The stored payload of a product (with a new revision), or ValueError for fields that cannot be stored."""
    if not math.isfinite(product.price):
        raise ValueError(f"product {product.product_id!r}: price must be a finite number")
    return {
        REVISION_FIELD: uuid.uuid4().hex,
        PRODUCT_ID_FIELD: product.product_id,
        CATEGORY_FIELD: product.category,
        TAGS_FIELD: [str(t) for t in product.tags],
        "title": product.title,
        PRICE_FIELD: float(product.price),
        "image_ref": product.image_ref,
        "box": product.box.to_list() if product.box is not None else None,
        EMBEDDER_FIELD: product.embedder,
        BRAND_FIELD: product.brand,
        IN_STOCK_FIELD: int(bool(product.in_stock)),
        ATTRIBUTES_FIELD: _attributes(product.attributes, f"product {product.product_id!r}"),
        IMAGES_FIELD: [str(i) for i in product.images],
        TEXT_FIELD: product_text(product),
        PHOTO_FIELD: int(product.photo),
    }


def product_text(product: Product) -> str:
    """The words a search's text is matched against: title, brand, tags and attribute values."""
    return " ".join([product.title, product.brand, *product.tags, *product.attributes.values()]).strip()


def check_text(text: str | None, settings: Settings) -> str | None:
    """A search's words (None or blank: none), or ValueError if longer than settings.max_text_length."""
    if text is None or not text.strip():
        return None
    if len(text) > settings.max_text_length:
        raise ValueError(f"text must be at most {settings.max_text_length} characters, got {len(text)}")
    return text.strip()


def rrf_weights(settings: Settings) -> list[float]:
    """Reciprocal-rank fusion's weights of the photo's ranks and the words' ranks, in the prefetch order."""
    return [1.0, settings.fusion_text_weight]


def check_diversity(diversity: float | None) -> float | None:
    """An MMR diversity within 0 (relevance only)..1, None (or 0) for plain nearest neighbours, or ValueError."""
    if diversity is None:
        return None
    if isinstance(diversity, bool) or not isinstance(diversity, int | float) or not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity!r}")
    return float(diversity) or None


def with_text(stored: Mapping[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """A payload-only update with the search text recomputed from the stored product and the changed fields."""
    merged = product_from_payload({**(stored or {}), **update})
    return {**update, TEXT_FIELD: product_text(merged)}


def update_payload(fields: Mapping[str, object]) -> dict[str, Any]:
    """The payload fields a payload-only update writes (with a new revision), or ValueError naming the field."""
    if not fields:
        raise ValueError("nothing to update: give at least one of " + ", ".join(EDITABLE_FIELDS))
    unknown = sorted(set(fields) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValueError(f"field {unknown[0]!r} cannot be updated; editable: {', '.join(EDITABLE_FIELDS)}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "price":
            price = _price_bound(value, "price")  # type: ignore[arg-type]
            out[PRICE_FIELD] = price
        elif name == "in_stock":
            if not isinstance(value, bool):
                raise ValueError(f"in_stock must be true or false, got {value!r}")
            out[IN_STOCK_FIELD] = int(value)
        elif name == "tags":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError("tags must be a list of strings")
            out[TAGS_FIELD] = [str(t) for t in value]
        elif name == "attributes":
            out[ATTRIBUTES_FIELD] = _attributes(value, "attributes")
        else:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {value!r}")
            out[name] = value
    out[REVISION_FIELD] = uuid.uuid4().hex
    return out


def embedder_counts(count: int, named: Mapping[str, int]) -> dict[str, int]:
    """Products per embedder from a facet over the non-empty names; the rest ("") were stored without one."""
    # Edge keeps a value in its facet with count 0 after the last point holding it was overwritten.
    counts = {name: n for name, n in named.items() if name and n > 0}
    unnamed = count - sum(counts.values())
    return counts | ({"": unnamed} if unnamed > 0 else {})


def product_from_payload(payload: Mapping[str, Any] | None) -> Product:
    """A Product from a stored payload (missing fields take their defaults)."""
    p = payload or {}
    box = p.get("box")
    return Product(
        product_id=str(p.get(PRODUCT_ID_FIELD, "")),
        category=str(p.get(CATEGORY_FIELD, "")),
        title=str(p.get("title", "")),
        price=float(p.get("price", 0.0)),
        image_ref=str(p.get("image_ref", "")),
        tags=[str(t) for t in p.get("tags") or []],
        box=Box(*(float(v) for v in box)) if box else None,
        revision=str(p.get(REVISION_FIELD) or ""),
        embedder=str(p.get(EMBEDDER_FIELD) or ""),
        brand=str(p.get(BRAND_FIELD) or ""),
        # Products stored before stock was kept were on sale.
        in_stock=bool(p.get(IN_STOCK_FIELD, True)),
        attributes={str(k): str(v) for k, v in (p.get(ATTRIBUTES_FIELD) or {}).items()},
        images=[str(i) for i in p.get(IMAGES_FIELD) or []],
        photo=int(p.get(PHOTO_FIELD) or 0),
    )


def vector_sizes(dim: int, garment_dim: int | None = None) -> dict[str, int]:
    """Each named vector's length: the image vector has the embedder's dim; fine mode's garment vector may be longer
    (it can carry the garment's colour histogram, fashion_search/garment_colour.py)."""
    sizes = dict.fromkeys(VECTOR_NAMES, dim)
    if garment_dim is not None:
        sizes[GARMENT_VECTOR] = garment_dim
    if min(sizes.values()) < 1:
        raise ValueError(f"vector dims must be positive, got {sizes}")
    return sizes


def prepare_points(
    items: Sequence[tuple[Product, Mapping[str, np.ndarray]]], sizes: Mapping[str, int], max_photos: int = 1,
) -> list[PreparedPoint]:
    """Validate a whole upsert batch before anything is written: (point id, vectors, payload) per product photo.

    A (product id, photo) repeated in the batch keeps its last occurrence, as sequential upserts would; the photos
    of one product in a batch share one revision, so a reindex replaces them together or not at all.
    """
    prepared: dict[tuple[str, int], PreparedPoint] = {}
    revisions: dict[str, str] = {}
    for product, vectors in items:
        pid = check_new_product_id(product.product_id)
        photo = check_count(product.photo, f"photo of product {pid!r}", max_photos - 1, minimum=0)
        if len(product.images) > max_photos:
            raise ValueError(f"product {pid!r} has {len(product.images)} photos; at most {max_photos} are kept")
        if not vectors:
            raise ValueError(f"product {pid!r} has no vectors")
        vecs = {
            name: check_vector(vec, sizes[name], f"vector {name!r} of product {pid!r}")
            for name, vec in ((check_vector_name(n), v) for n, v in vectors.items())
        }
        payload = product_payload(product)
        payload[REVISION_FIELD] = revisions.setdefault(pid, payload[REVISION_FIELD])
        prepared.pop((pid, photo), None)
        prepared[(pid, photo)] = (point_id(pid, photo), vecs, payload)
    return list(prepared.values())


def stale_photo_ids(prepared: Sequence[PreparedPoint], max_photos: int) -> list[str]:
    """Point ids of photos a product no longer has (past the photos written for it in this batch)."""
    kept: dict[str, int] = {}
    for _, _, payload in prepared:
        pid = payload[PRODUCT_ID_FIELD]
        kept[pid] = max(kept.get(pid, 0), len(payload[IMAGES_FIELD]), payload[PHOTO_FIELD] + 1)
    return [i for pid, n in kept.items() for i in photo_point_ids(pid, range(n, max_photos))]


def read_revisions(items: Sequence[tuple[Product, Mapping[str, np.ndarray]]]) -> tuple[list[str], bool]:
    """The revisions a replacement batch was read with, and whether any product was stored before revisions."""
    revisions = [product.revision for product, _ in items]
    return sorted({r for r in revisions if r}), not all(revisions)


def skipped_products(prepared: Sequence[PreparedPoint], stored: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Product ids of a conditional write whose stored revision (by point id) is not the one just written."""
    return list(dict.fromkeys(
        payload[PRODUCT_ID_FIELD] for pid, _, payload in prepared
        if (stored.get(pid) or {}).get(REVISION_FIELD) != payload[REVISION_FIELD]
    ))


def grouped_search(fetch: Callable[[int], list[Hit]], offset: int, top_k: int, max_photos: int) -> list[Hit]:
    """One page of products (best photo each, no product twice) from point searches of growing depth: a product
    with several photos takes several of the nearest points, so the search goes deeper until the page is full."""
    limit = offset + top_k
    cap = limit * max(1, max_photos)
    while True:
        hits = fetch(limit)
        page, enough = group_hits(hits, offset, top_k)
        if enough or len(hits) < limit or limit >= cap:
            return page
        limit = min(cap, limit * 2)


def group_hits(hits: Sequence[Hit], offset: int, top_k: int) -> tuple[list[Hit], bool]:
    """The best-scored point per product, page offset..offset+top_k; and whether the hits held enough products."""
    best: dict[str, Hit] = {}
    for hit in hits:  # best first: the first point of a product is its best
        best.setdefault(hit.product.product_id, hit)
    ranked = list(best.values())
    return ranked[offset:offset + top_k], len(ranked) >= offset + top_k


def check_product_ids(product_ids: Sequence[str]) -> list[str]:
    """Distinct, validated product ids in their given order."""
    if isinstance(product_ids, str):
        raise ValueError("product_ids must be a list of strings, not a string")
    return list(dict.fromkeys(check_product_id(p) for p in product_ids))


def check_stored_layout(stored: Mapping[str, int], sizes: Mapping[str, int], where: str) -> None:
    """IndexLayoutError (a ValueError) if an existing index was built with other vector names or dims."""
    if sorted(stored) != sorted(VECTOR_NAMES):
        raise IndexLayoutError(
            f"index at {where} has vectors {sorted(stored)}; expected {sorted(VECTOR_NAMES)}"
        )
    if dict(stored) != dict(sizes):
        raise IndexLayoutError(
            f"index at {where} holds vectors of dim {dict(stored)} but dim {dict(sizes)} was requested; "
            "re-index into a new collection (or delete the old one) after changing the embedder or the garment "
            "colour weight"
        )


def stored_sizes(meta: Mapping[str, Any]) -> dict[str, int]:
    """The vector sizes a sidecar or metadata record holds (older ones record one dim for every vector)."""
    sizes = meta.get("sizes") or dict.fromkeys(meta["vector_names"], meta["dim"])
    return {str(name): int(size) for name, size in sizes.items()}


def search_each(search: Callable[..., list[Hit]], queries: Sequence[SearchQuery]) -> list[list[Hit]]:
    """Each query's hits, in order, from an in-process index's search (a batch costs its searches one by one)."""
    return [
        search(
            q.vector, q.top_k, q.vector_name, q.categories, q.expand, filters=q.filters, offset=q.offset,
            text=q.text, diversity=q.diversity,
        )
        for q in queries
    ]
