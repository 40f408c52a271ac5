"""Catalog ingestion and reindexing: the one implementation used by the CLI, the gateway and the Celery tasks."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import replace as dataclass_replace
from pathlib import Path

from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import Product, VectorIndex, check_new_product_id
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.pipeline.search_pipeline import SearchPipeline, product_with

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """How many products were indexed and which were refused (id, reason)."""

    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        """Add another report's counts to this one."""
        self.indexed += other.indexed
        self.failed.extend(other.failed)


def store_image(data: bytes, settings: Settings) -> str:
    """Keep an uploaded product image under data_dir/images (content-addressed) and return its path."""
    digest = hashlib.sha256(data).hexdigest()[:32]
    path = settings.images_dir / digest[:2] / f"{digest}.img"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a crash never leaves a half-written image behind
    return str(path.resolve())


CHANGED_WHILE_REINDEXING = "changed or deleted while it was reindexed; the newer write was kept"


def reindex_page_size(settings: Settings) -> int:
    """Products per reindex batch: the ingest batch size, within what one scroll page may list."""
    return max(1, min(settings.ingest_batch_size, settings.max_scroll_limit))


def id_batches(product_ids: Sequence[str], size: int) -> Iterator[list[str]]:
    """The distinct ids in their given order, in batches of at most size."""
    ids = list(dict.fromkeys(product_ids))
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def scroll_pages(index: VectorIndex, limit: int) -> Iterator[list[Product]]:
    """Every product of the index, one non-empty page of at most limit products at a time.

    Re-upserting a product keeps its point id and thus its place in the scroll order, so reindexing while
    paging never makes the listing skip or repeat a product.
    """
    offset: str | None = None
    while True:
        page, offset = index.scroll(offset, limit)
        if page:
            yield page
        if offset is None:
            return


class Ingestor:
    """Turns catalog records into indexed products, in batches, skipping (and reporting) bad images.

    Also reindexes products already in the index from their stored images, after a model change.
    """

    def __init__(self, pipeline: SearchPipeline, settings: Settings) -> None:
        self.pipeline = pipeline
        self.settings = settings

    def ingest_records(
        self,
        records: Sequence[CatalogRecord],
        with_garment: bool = True,
        on_progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Index records whose images are on this machine's disk."""
        report = IngestReport()
        batch = max(1, self.settings.ingest_batch_size)
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            loaded: list[tuple[Product, list[Image.Image]]] = []
            for rec in chunk:
                try:
                    check_new_product_id(rec.product_id)
                    self._check_photo_count(len(rec.photo_paths))
                    loaded.append((_product(rec), [self._load(p) for p in rec.photo_paths]))
                except (OSError, ValueError) as exc:  # ValueError: a bad id, or InvalidImage
                    report.failed.append((rec.product_id, str(exc)))
            report.merge(self._index(loaded, with_garment))
            if on_progress:
                on_progress(len(chunk))
        return report

    def ingest_payloads(
        self, payloads: Sequence[dict[str, object]], image_data: Sequence[bytes | Sequence[bytes]],
    ) -> IngestReport:
        """Index records that arrive with their image bytes, one photo or a list of them per record (Celery tasks,
        HTTP uploads); images are stored."""
        report = IngestReport()
        loaded: list[tuple[Product, list[Image.Image]]] = []
        for payload, given in zip(payloads, image_data, strict=True):
            photos = [given] if isinstance(given, bytes) else list(given)
            try:
                rec = CatalogRecord(**payload)  # type: ignore[arg-type]
            except TypeError as exc:  # a producer's record with a missing or unknown field
                report.failed.append((str(payload.get("product_id", "")), f"bad record: {exc}"))
                continue
            try:
                check_new_product_id(rec.product_id)
                self._check_photo_count(len(photos))
                images = [decode_image(data, self.settings) for data in photos]
            except ValueError as exc:  # a bad id, or InvalidImage
                report.failed.append((rec.product_id, str(exc)))
                continue
            stored = [store_image(data, self.settings) for data in photos]
            rec.image_path, rec.images = stored[0], stored if len(stored) > 1 else []
            loaded.append((_product(rec), images))
        report.merge(self._index(loaded, True))
        return report

    def reindex(
        self, product_ids: Sequence[str] | None = None, on_progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Recompute the vectors of the given products (None: every product) from their stored images.

        Payloads are kept and writes are keyed by product id, so a repeated run is harmless; a product whose
        image is missing or unreadable (or an id not in the index) is reported and left as it is, and so is one
        written or deleted by someone else while its vectors were computed (the newer write wins).
        """
        report = IngestReport()
        pages = self._pages_of_ids(product_ids, report) if product_ids is not None else self._pages_of_all()
        for page, seen in pages:
            loaded: list[tuple[Product, list[Image.Image]]] = []
            for product in page:
                try:
                    # An id stored before ids had a rule would make the index refuse the whole page.
                    check_new_product_id(product.product_id)
                    if not product.photo_refs:
                        raise OSError("no stored image (image_ref is empty)")
                    # The box came from the old detector; the new detection sets it again (or leaves none).
                    loaded.append((replace(product, box=None), [self._load(p) for p in product.photo_refs]))
                except (OSError, ValueError) as exc:  # ValueError: such an id, or InvalidImage
                    report.failed.append((product.product_id, str(exc)))
            report.merge(self._index(loaded, True, replace=True))
            if on_progress:
                on_progress(seen)
        return report

    def _pages_of_ids(self, product_ids: Sequence[str], report: IngestReport) -> Iterator[tuple[list[Product], int]]:
        """The stored products of the given ids in batches, each with its count of ids; unknown ids are reported."""
        for chunk in id_batches(product_ids, reindex_page_size(self.settings)):
            page: list[Product] = []
            for pid in chunk:
                product = self.pipeline.index.get(pid)
                if product is None:
                    report.failed.append((pid, "not in the index"))
                else:
                    page.append(product)
            yield page, len(chunk)

    def _pages_of_all(self) -> Iterator[tuple[list[Product], int]]:
        """Every stored product, one scroll page at a time (each with its size)."""
        for page in scroll_pages(self.pipeline.index, reindex_page_size(self.settings)):
            yield page, len(page)

    def _load(self, path: str) -> Image.Image:
        return decode_image(Path(path).read_bytes(), self.settings)

    def _check_photo_count(self, n: int) -> None:
        if n > self.settings.max_photos_per_product:
            raise ValueError(f"{n} photos; at most {self.settings.max_photos_per_product} (FS_MAX_PHOTOS_PER_PRODUCT)")

    def _index(
        self, loaded: list[tuple[Product, list[Image.Image]]], with_garment: bool, replace: bool = False
    ) -> IngestReport:
        """Embed every photo and write one point each; replace=True writes only products nobody changed since they
        were read (reindex)."""
        if not loaded:
            return IngestReport()
        flat = [img for _, images in loaded for img in images]
        indexed = iter(self.pipeline.catalog_vectors(flat, with_garment=with_garment))
        model = self.pipeline.vectors_model()
        items: list[tuple[Product, dict]] = []
        for product, images in loaded:  # fresh copies, filled in as they are stored (product_with does too)
            product.embedder = model
            vectors = [next(indexed) for _ in images]
            # The main photo's detection names an unknown category for every photo; each photo keeps its own box.
            main = product_with(product, vectors[0])
            items.append((main, vectors[0].vectors))
            items += [
                (product_with(dataclass_replace(main, photo=k, box=None), v), v.vectors)
                for k, v in enumerate(vectors[1:], start=1)
            ]
        n_products = len(loaded)
        if not replace:
            self.pipeline.index.upsert(items)
            return IngestReport(indexed=n_products)
        # A product written or deleted while its new vectors were computed keeps that newer write.
        skipped = self.pipeline.index.replace_unchanged(items)
        return IngestReport(
            indexed=n_products - len(skipped), failed=[(pid, CHANGED_WHILE_REINDEXING) for pid in skipped],
        )


def _product(rec: CatalogRecord) -> Product:
    """The product a catalog record describes, before its vectors are known."""
    return Product(
        product_id=rec.product_id, category=rec.category, title=rec.title, price=rec.price,
        image_ref=rec.image_path, tags=list(rec.tags), brand=rec.brand, in_stock=rec.in_stock,
        attributes=dict(rec.attributes), images=list(rec.images),
    )
