"""Domain types shared by the models, the index, the pipeline and the API, and the interfaces between them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

IMAGE_VECTOR = "image"
GARMENT_VECTOR = "garment"
VECTOR_NAMES = (IMAGE_VECTOR, GARMENT_VECTOR)

# Product ids travel unescaped in URL paths (/v1/products/{id}); one rule for every way a product comes in (HTTP,
# catalog files, Celery payloads, the search service), so no stored product is out of the API's reach.
MAX_PRODUCT_ID_LENGTH = 128
PRODUCT_ID_PATTERN = rf"^[A-Za-z0-9._:\-]{{1,{MAX_PRODUCT_ID_LENGTH}}}$"
PRODUCT_ID_RULE = f"1-{MAX_PRODUCT_ID_LENGTH} characters of letters, digits, '.', '_', ':' or '-'"
_PRODUCT_ID = re.compile(PRODUCT_ID_PATTERN)


def check_new_product_id(product_id: object) -> str:
    """The id of a product about to be stored, or ValueError naming the rule it breaks."""
    if not isinstance(product_id, str) or not _PRODUCT_ID.fullmatch(product_id):
        raise ValueError(f"product id {product_id!r} is not valid: it must be {PRODUCT_ID_RULE}")
    return product_id


class IndexLayoutError(ValueError):
    """An existing index holds other vectors (names or lengths) than the configured models make: it needs a new
    index, since its stored vectors cannot be compared with new ones."""


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixel coordinates (x0, y0 inclusive; x1, y1 exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return self.width * self.height

    def clip(self, width: int, height: int) -> Box:
        """The box clipped to an image of the given size."""
        return Box(
            min(max(self.x0, 0.0), width), min(max(self.y0, 0.0), height),
            min(max(self.x1, 0.0), width), min(max(self.y1, 0.0), height),
        )

    def iou(self, other: Box) -> float:
        """Intersection over union with another box."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_int(self) -> tuple[int, int, int, int]:
        """Integer pixel bounds (x0, y0, x1, y1), at least one pixel wide."""
        x0, y0 = int(np.floor(self.x0)), int(np.floor(self.y0))
        return x0, y0, max(x0 + 1, int(np.ceil(self.x1))), max(y0 + 1, int(np.ceil(self.y1)))

    def to_list(self) -> list[float]:
        """[x0, y0, x1, y1] for JSON payloads."""
        return [round(self.x0, 1), round(self.y0, 1), round(self.x1, 1), round(self.y1, 1)]


@dataclass(frozen=True)
class Detection:
    """One garment found in an image."""

    box: Box
    category: str
    score: float


@dataclass
class Product:
    """A catalog product as stored beside its vectors."""

    product_id: str
    category: str = ""
    title: str = ""
    price: float = 0.0
    image_ref: str = ""
    tags: list[str] = field(default_factory=list)
    box: Box | None = None
    # Stamp of the stored write this product was read from (set by the index on every write; empty if never
    # stored): replace_unchanged() writes only where it is still current. Not part of the product's identity.
    revision: str = field(default="", compare=False)
    # The embedder model that computed the stored vectors (Embedder.model_name; empty if unknown): vectors of two
    # models, or of one model with two colour weights, are not comparable.
    embedder: str = field(default="", compare=False)
    brand: str = ""
    in_stock: bool = True
    # Free-form catalog attributes (colour, material, ...), name → value.
    attributes: dict[str, str] = field(default_factory=dict)
    # Every photo of the product (images[0] is image_ref); each is its own point in the index. Empty: image_ref alone.
    images: list[str] = field(default_factory=list)
    # Which of the photos a stored point (or a search hit: the photo that matched) belongs to.
    photo: int = field(default=0, compare=False)

    @property
    def photo_refs(self) -> list[str]:
        """The product's photos: images, or image_ref alone when images is empty."""
        return list(self.images) or ([self.image_ref] if self.image_ref else [])

    @property
    def photo_ref(self) -> str:
        """The photo of this point or hit (the main photo for photo 0 or an unknown index)."""
        refs = self.photo_refs
        return refs[self.photo] if 0 <= self.photo < len(refs) else self.image_ref


# The product fields a payload-only update (PATCH) may change: none of them feeds the vectors.
EDITABLE_FIELDS = ("title", "category", "price", "tags", "brand", "in_stock", "attributes")


@dataclass
class Hit:
    """A product returned by a search with its similarity score."""

    product: Product
    score: float


@dataclass(frozen=True)
class SearchFilter:
    """What a search is restricted to; every field left empty (None) matches every product.

    categories and brands match any of the given values, tags all of them; prices are inclusive bounds; exclude
    leaves out these product ids (a "more like this" search leaves out its own product).
    """

    categories: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    brands: tuple[str, ...] = ()
    in_stock: bool | None = None
    tags: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """Whether the filter matches every product."""
        return self == SearchFilter()

    def key(self) -> str:
        """A canonical text of the filter, for keying cached answers."""
        if self.is_empty():
            return ""
        parts = [
            ",".join(sorted(self.categories)), _bound(self.min_price), _bound(self.max_price),
            ",".join(sorted(self.brands)), "" if self.in_stock is None else str(int(self.in_stock)),
            ",".join(sorted(self.tags)), ",".join(sorted(self.exclude)),
        ]
        return "|".join(parts)


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


@dataclass
class IndexStats:
    """Size and version of the collection; the version changes on every write."""

    count: int
    version: int
    dim: int
    backend: str
    vector_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    # Stored products per embedder model that computed their vectors ("" for products stored before this was kept).
    embedders: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """Finds garments in an image."""

    @property
    def model_name(self) -> str: ...

    def detect(self, image: Image.Image, min_score: float | None = None) -> list[Detection]: ...


@runtime_checkable
class Segmenter(Protocol):
    """Returns a boolean mask (box-sized, H×W) for each box."""

    @property
    def model_name(self) -> str: ...

    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> list[np.ndarray]: ...


@runtime_checkable
class Embedder(Protocol):
    """Maps images to L2-normalised vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchQuery:
    """One search of a batch: VectorIndex.search's arguments."""

    vector: np.ndarray
    top_k: int
    vector_name: str = IMAGE_VECTOR
    categories: Sequence[str] | None = None
    expand: int = 0
    filters: SearchFilter | None = None
    offset: int = 0
    text: str | None = None
    diversity: float | None = None


@runtime_checkable
class VectorIndex(Protocol):
    """A collection of products with named vectors, category filters and HNSW search."""

    def upsert(self, items: Sequence[tuple[Product, dict[str, np.ndarray]]]) -> int: ...

    def replace_unchanged(self, items: Sequence[tuple[Product, dict[str, np.ndarray]]]) -> list[str]:
        """Replace stored products only where nobody wrote them since they were read (same revision).

        Returns the ids left alone: changed or deleted in the meantime (a deleted product is not recreated).
        """
        ...

    def search(
        self, vector: np.ndarray, top_k: int, vector_name: str = IMAGE_VECTOR,
        categories: Sequence[str] | None = None, expand: int = 0, *,
        filters: SearchFilter | None = None, offset: int = 0, text: str | None = None, diversity: float | None = None,
    ) -> list[Hit]:
        """The top_k nearest products after skipping offset (a page), within filters (and categories, if given);
        expand > 0 first adds the expand nearest stored vectors to the query; text fuses a BM25 match of the words
        (reciprocal-rank fusion); diversity (0..1) re-ranks the photo match by MMR."""
        ...

    def search_batch(self, queries: Sequence[SearchQuery]) -> list[list[Hit]]:
        """Each query's hits, in order: one round trip to a remote index for all of them."""
        ...

    def get(self, product_id: str) -> Product | None: ...

    def vectors(self, product_id: str) -> dict[str, np.ndarray] | None:
        """The stored named vectors of a product, or None if the id is unknown ("more like this")."""
        ...

    def update_fields(self, product_id: str, fields: Mapping[str, object]) -> Product | None:
        """Change catalog fields (EDITABLE_FIELDS) of a stored product without touching its vectors; the updated
        product, or None if the id is unknown."""
        ...

    def scroll(self, offset: str | None, limit: int) -> tuple[list[Product], str | None]:
        """Up to limit products in point-id order from offset (None: the start), and the next page's offset.

        The offset is an opaque cursor (None when no page follows); re-upserting a product keeps its place.
        """
        ...

    def delete(self, product_ids: Sequence[str]) -> int: ...

    def stats(self) -> IndexStats: ...

    @property
    def version(self) -> int:
        """The write version alone (grows on every write): what a per-query cache key needs, without stats' counts."""
        ...

    def optimize(self) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class RebuildableIndex(VectorIndex, Protocol):
    """A VectorIndex that can build a complete new collection beside the served one and switch to it atomically."""

    def begin_rebuild(self, dim: int, garment_dim: int | None = None) -> str:
        """Create an empty collection with these vector dims and the current settings; its name for the calls below."""
        ...

    def rebuild_upsert(self, rebuild: str, items: Sequence[tuple[Product, dict[str, np.ndarray]]]) -> int:
        """Write products into the rebuild's collection (searches still read the served one)."""
        ...

    def rebuild_delete(self, rebuild: str, product_ids: Sequence[str]) -> int:
        """Delete products from the rebuild's collection; returns how many existed there."""
        ...

    def commit_rebuild(self, rebuild: str, expected_version: int) -> int | None:
        """Serve the rebuild's collection and drop the old one, atomically for searches, if the served version is
        still expected_version; the new version, or None (nothing switched) if the served index was written since."""
        ...

    def abort_rebuild(self, rebuild: str) -> None:
        """Drop the rebuild's collection (an unknown name is ignored)."""
        ...


def as_rebuildable(index: VectorIndex) -> RebuildableIndex:
    """The index as a RebuildableIndex, or ValueError (checked on its class: isinstance would read `version`, a
    remote call)."""
    names = ("begin_rebuild", "rebuild_upsert", "rebuild_delete", "commit_rebuild", "abort_rebuild")
    if not all(callable(getattr(type(index), n, None)) for n in names):
        raise ValueError(f"a {type(index).__name__} cannot rebuild its collection")
    return index  # type: ignore[return-value]
