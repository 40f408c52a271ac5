"""Response models of the public API (they define the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["simple", "fine", "tag"]


class ProductOut(BaseModel):
    """A catalog product."""

    product_id: str
    category: str
    title: str
    price: float
    tags: list[str] = Field(default_factory=list)
    box: list[float] | None = None
    image_url: str | None = None
    brand: str = ""
    in_stock: bool = True
    attributes: dict[str, str] = Field(default_factory=dict)
    photo_urls: list[str] = Field(default_factory=list, description="every photo of the product, the main one first")


class ProductPage(BaseModel):
    """One page of the catalog listing."""

    products: list[ProductOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null after the last page")


class ProductPatch(BaseModel):
    """Catalog fields to change without re-embedding the product's photo; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    category: str | None = None
    price: float | None = Field(None, ge=0, allow_inf_nan=False)
    tags: list[str] | None = None
    brand: str | None = None
    in_stock: bool | None = None
    attributes: dict[str, str] | None = None


class ResultOut(BaseModel):
    """A matching product with its cosine similarity."""

    product_id: str
    score: float = Field(description="cosine similarity to the query; in simple and tag mode to the expanded query "
                         "(FS_QUERY_EXPANSION), so even an exact match scores below 1, plus the category vote's bonus "
                         "where that is on (FS_CATEGORY_VOTE_DEPTH, FS_CATEGORY_VOTE_WEIGHT): results come in this "
                         "score's order")
    category: str
    title: str
    price: float
    image_url: str | None = None
    brand: str = ""
    in_stock: bool = True
    confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="calibrated probability that the product is of the query garment's kind, "
        "from the score and the mode (fitted on train photos: FS_CONFIDENCE_FIT); comparable across modes",
    )
    match: Literal["good", "possible"] = Field(
        "possible", description='"good" from FS_GOOD_MATCH_CONFIDENCE on, else "possible"'
    )
    photo: int = Field(0, description="which of the product's photos matched (0: the main photo)")
    photo_url: str | None = Field(None, description="the photo that matched")


class GarmentOut(BaseModel):
    """A garment detected in the query photo and (fine mode) its matches."""

    box: list[float]
    category: str
    score: float
    results: list[ResultOut] = Field(default_factory=list)


class SearchOut(BaseModel):
    """A search response."""

    mode: Mode
    took_ms: float
    cached: bool = False
    index_version: int
    image_size: list[int]
    degraded: str | None = None
    results: list[ResultOut]
    garments: list[GarmentOut] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    currency: str = Field("EUR", description="ISO 4217 code of the prices (FS_CURRENCY)")
    suggested_mode: Mode | None = Field(
        None, description='"fine" where the photo shows garments of several kinds: the results mix them in turn, and '
        "fine mode answers each garment on its own",
    )


class StatsOut(BaseModel):
    """Collection size, version and the categories seen in the catalog."""

    count: int
    version: int
    dim: int
    backend: str
    categories: list[str]
    embedders: dict[str, int] = Field(
        default_factory=dict, description='stored products per embedder model that computed them ("" = unrecorded)'
    )
    stale_index: str | None = Field(
        None, description="set when some stored vectors come from another embedder than the queries' (reindex)"
    )


class ReadyOut(BaseModel):
    """Readiness: each dependency's state, and whether the gateway can answer searches."""

    ready: bool
    checks: dict[str, str] = Field(
        description='per dependency: "ok", "in-process", "down", "off" (the optional cache) or "stale" (the index)'
    )
    stale_index: str | None = Field(None, description="why the index is stale, when it is")


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: a human-readable message."""

    detail: str


class JobAccepted(BaseModel):
    """An ingest job was queued: follow it at /v1/jobs/{job_id}."""

    job_id: str
    total: int = Field(description="products in the catalog")


class RefusedOut(BaseModel):
    """A record a job did not index, and why."""

    product_id: str
    reason: str
    record: dict[str, object] = Field(default_factory=dict, description="the record as queued (to re-run it)")


class DuplicateOut(BaseModel):
    """A product whose main photo is another product's (indexed anyway unless skipped: FS_DUPLICATE_ACTION)."""

    product_id: str
    duplicate_of: str = Field(description="the other product, stored or earlier in the job")
    kind: Literal["exact", "near"] = Field(description="exact: the same file bytes; near: a close image vector")
    distance: float = Field(description="cosine distance of the two main photos' image vectors")
    skipped: bool = Field(description="not indexed (FS_DUPLICATE_ACTION=skip)")


class JobOut(BaseModel):
    """An ingest job's progress: every product is processed once, as indexed or refused."""

    job_id: str
    state: Literal["queued", "running", "done"]
    total: int
    processed: int
    indexed: int
    refused: list[RefusedOut]
    remaining: int
    duplicates: list[DuplicateOut] = Field(
        default_factory=list, description="products whose main photo duplicates another product's (FS_DUPLICATE_*)",
    )
