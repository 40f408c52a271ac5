"""Catalog ingestion and reindexing: the one implementation used by the CLI, the gateway and the Celery tasks."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import Product, VectorIndex, check_new_product_id
from fashion_search.core.fetch import fetch_image
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
        photos: Sequence[bytes] | None = None,
    ) -> IngestReport:
        """Index records in batches of settings.ingest_batch_size, each batch through the models at once.

        A record's photo: its bytes in photos where given (stored under data_dir), else its image_path on this
        machine's disk, else its image_url (fetched with core/fetch.py's limits and guard, then stored).
        """
        if photos is not None and len(photos) != len(records):
            raise ValueError(f"{len(records)} records but {len(photos)} photos")
        report = IngestReport()
        batch = max(1, self.settings.ingest_batch_size)
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            given = photos[start:start + batch] if photos is not None else [b""] * len(chunk)
            loaded: list[tuple[Product, Image.Image]] = []
            for rec, result in zip(chunk, self._photos(chunk, given), strict=True):
                if isinstance(result, Exception):
                    report.failed.append((rec.product_id, str(result)))
                else:
                    loaded.append((_product(rec, result[1]), result[0]))
            report.merge(self._index(loaded, with_garment))
            if on_progress:
                on_progress(len(chunk))
        return report

    def ingest_payloads(self, payloads: Sequence[dict[str, object]], image_data: Sequence[bytes]) -> IngestReport:
        """Index records that arrive as JSON (Celery tasks), each with its photo's bytes or b"" to use its path or
        URL; sent photos are stored."""
        report = IngestReport()
        records, photos = [], []
        for payload, data in zip(payloads, image_data, strict=True):
            try:
                records.append(CatalogRecord(**payload))  # type: ignore[arg-type]
            except TypeError as exc:  # a producer's record with a missing or unknown field
                report.failed.append((str(payload.get("product_id", "")), f"bad record: {exc}"))
                continue
            photos.append(data)
        report.merge(self.ingest_records(records, photos=photos))
        order: dict[str, int] = {}
        for i, payload in enumerate(payloads):
            order.setdefault(str(payload.get("product_id", "")), i)
        report.failed.sort(key=lambda f: order.get(f[0], len(order)))  # refusals in the order of the records
        return report

    def _photos(
        self, records: Sequence[CatalogRecord], given: Sequence[bytes],
    ) -> list[tuple[Image.Image, str] | Exception]:
        """Each record's decoded photo and the path it is kept at, or why not; URLs are fetched concurrently."""
        with ThreadPoolExecutor(max_workers=max(1, self.settings.fetch_concurrency)) as pool:
            return list(pool.map(self._photo, records, given))

    def _photo(self, rec: CatalogRecord, data: bytes) -> tuple[Image.Image, str] | Exception:
        try:
            check_new_product_id(rec.product_id)
            if data or not (rec.image_path or rec.image_url):  # no photo at all: decode_image says it is empty
                return decode_image(data, self.settings), store_image(data, self.settings)
            if rec.image_path and (rec.image_url == "" or Path(rec.image_path).is_file()):
                return self._load(rec.image_path), rec.image_path
            fetched = fetch_image(rec.image_url, self.settings)
            return decode_image(fetched, self.settings), store_image(fetched, self.settings)
        except (OSError, ValueError) as exc:  # ValueError: a bad id, InvalidImage or FetchRefused
            return exc

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
            loaded: list[tuple[Product, Image.Image]] = []
            for product in page:
                try:
                    # An id stored before ids had a rule would make the index refuse the whole page.
                    check_new_product_id(product.product_id)
                    if not product.image_ref:
                        raise OSError("no stored image (image_ref is empty)")
                    # The box came from the old detector; the new detection sets it again (or leaves none).
                    loaded.append((replace(product, box=None), self._load(product.image_ref)))
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

    def _index(
        self, loaded: list[tuple[Product, Image.Image]], with_garment: bool, replace: bool = False
    ) -> IngestReport:
        """Embed and write; replace=True writes only products nobody changed since they were read (reindex)."""
        if not loaded:
            return IngestReport()
        indexed = self.pipeline.catalog_vectors([img for _, img in loaded], with_garment=with_garment)
        model = self.pipeline.vectors_model()
        for product, _ in loaded:  # fresh copies, filled in as they are stored (product_with does too)
            product.embedder = model
        items = [
            (product_with(product, vecs), vecs.vectors)
            for (product, _), vecs in zip(loaded, indexed, strict=True)
        ]
        if not replace:
            self.pipeline.index.upsert(items)
            return IngestReport(indexed=len(items))
        # A product written or deleted while its new vectors were computed keeps that newer write.
        skipped = self.pipeline.index.replace_unchanged(items)
        return IngestReport(
            indexed=len(items) - len(skipped), failed=[(pid, CHANGED_WHILE_REINDEXING) for pid in skipped],
        )


def _product(rec: CatalogRecord, image_ref: str) -> Product:
    """The product a catalog record describes (its photo kept at image_ref), before its vectors are known."""
    return Product(
        product_id=rec.product_id, category=rec.category, title=rec.title, price=rec.price,
        image_ref=image_ref, tags=list(rec.tags), brand=rec.brand, in_stock=rec.in_stock,
        attributes=dict(rec.attributes),
    )
