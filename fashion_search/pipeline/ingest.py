"""Catalog ingestion and reindexing: the one implementation used by the CLI, the gateway and the Celery tasks."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import (
    IMAGE_VECTOR,
    Product,
    SearchFilter,
    SearchQuery,
    VectorIndex,
    as_rebuildable,
    check_new_product_id,
)
from fashion_search.core.fetch import fetch_image
from fashion_search.core.garment_colour import garment_vector_dim
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.pipeline.search_pipeline import SearchPipeline, product_with

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duplicate:
    """An ingested product whose main photo is another product's: the same bytes (exact) or a cosine distance of its
    image vector under settings.duplicate_distance (near); skipped: not indexed (settings.duplicate_action)."""

    product_id: str
    duplicate_of: str
    kind: str
    distance: float
    skipped: bool = False

    def to_dict(self) -> dict[str, object]:
        """The JSON a job report and the API carry."""
        return dataclasses.asdict(self)


@dataclass
class IngestReport:
    """How many products were indexed, which were refused (id, reason) and which duplicate another product."""

    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        """Add another report's counts to this one."""
        self.indexed += other.indexed
        self.failed.extend(other.failed)
        self.duplicates.extend(other.duplicates)


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
# Cosine distance a byte-identical photo's vectors may show from float rounding.
DUPLICATE_TOLERANCE = 1e-5
# Catch-up passes a rebuild makes over products written meanwhile before it gives up switching.
REBUILD_MAX_PASSES = 5


@dataclass
class RebuildReport(IngestReport):
    """A rebuild's products and refusals; version: the served version after the switch (None: nothing switched)."""

    version: int | None = None
    passes: int = 0
    reason: str = ""


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
        photos: Sequence[bytes | Sequence[bytes]] | None = None,
    ) -> IngestReport:
        """Index records in batches of settings.ingest_batch_size, each batch through the models at once.

        A record's photo: its bytes in photos where given (stored under data_dir), else its image_path on this
        machine's disk, else its image_url (fetched with core/fetch.py's limits and guard, then stored). More photos
        of a product (each its own point): the rest of a list of bytes given, else the record's images paths.
        """
        if photos is not None and len(photos) != len(records):
            raise ValueError(f"{len(records)} records but {len(photos)} photos")
        report = IngestReport()
        batch = max(1, self.settings.ingest_batch_size)
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            given = photos[start:start + batch] if photos is not None else [b""] * len(chunk)
            loaded: list[tuple[Product, list[Image.Image]]] = []
            for rec, result in zip(chunk, self._photos(chunk, given), strict=True):
                if isinstance(result, Exception):
                    report.failed.append((rec.product_id, str(result)))
                else:
                    loaded.append((_product(rec, result[1]), result[0]))
            report.merge(self._index(loaded, with_garment))
            if on_progress:
                on_progress(len(chunk))
        return report

    def ingest_payloads(
        self, payloads: Sequence[dict[str, object]], image_data: Sequence[bytes | Sequence[bytes]],
    ) -> IngestReport:
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
        self, records: Sequence[CatalogRecord], given: Sequence[bytes | Sequence[bytes]],
    ) -> list[tuple[list[Image.Image], list[str]] | Exception]:
        """Each record's decoded photos and the paths they are kept at, or why not; URLs are fetched concurrently."""
        with ThreadPoolExecutor(max_workers=max(1, self.settings.fetch_concurrency)) as pool:
            return list(pool.map(self._photo, records, given))

    def _photo(
        self, rec: CatalogRecord, sent: bytes | Sequence[bytes],
    ) -> tuple[list[Image.Image], list[str]] | Exception:
        data, more = (sent, []) if isinstance(sent, bytes) else (bytes(sent[0]) if sent else b"", list(sent[1:]))
        try:
            check_new_product_id(rec.product_id)
            n = 1 + (len(more) if more else max(0, len(rec.images) - 1))
            if n > self.settings.max_photos_per_product:
                raise ValueError(f"{n} photos; at most {self.settings.max_photos_per_product} "
                                 "(FS_MAX_PHOTOS_PER_PRODUCT)")
            if data or not (rec.image_path or rec.image_url):  # no photo at all: decode_image says it is empty
                main = decode_image(data, self.settings), store_image(data, self.settings)
            elif rec.image_path and (rec.image_url == "" or Path(rec.image_path).is_file()):
                main = self._load(rec.image_path), rec.image_path
            else:
                fetched = fetch_image(rec.image_url, self.settings)
                main = decode_image(fetched, self.settings), store_image(fetched, self.settings)
            if more:
                extra = [(decode_image(d, self.settings), store_image(d, self.settings)) for d in more]
            else:
                extra = [(self._load(p), p) for p in rec.images[1:]]
            photos = [main, *extra]
            return [img for img, _ in photos], [path for _, path in photos]
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
            loaded = self._stored_photos(page, report)
            report.merge(self._index(loaded, True, replace=True))
            if on_progress:
                on_progress(seen)
        return report

    def rebuild(self, on_progress: Callable[[int], None] | None = None) -> RebuildReport:
        """Build a complete new collection from every product's stored images with the current models and settings,
        beside the served one, then switch searches to it atomically and drop the old one (zero downtime).

        Products written meanwhile are caught up in further passes (by revision) until a switch finds the served
        version unchanged; nothing switches if any product cannot be embedded (they are reported).
        """
        index = as_rebuildable(self.pipeline.index)
        dim = self.pipeline.embedder.dim
        report = RebuildReport()
        copied: dict[str, str] = {}  # product id -> the revision its new vectors were computed from
        name = index.begin_rebuild(dim, garment_vector_dim(self.settings, dim))
        try:
            for report.passes in range(1, REBUILD_MAX_PASSES + 1):
                version = index.version
                seen: set[str] = set()
                for page in scroll_pages(index, reindex_page_size(self.settings)):
                    seen.update(p.product_id for p in page)
                    todo = [p for p in page if copied.get(p.product_id) != p.revision]
                    items = self._vectors(self._stored_photos(todo, report), True)
                    index.rebuild_upsert(name, items)
                    copied.update((p.product_id, p.revision) for p in todo)
                    if on_progress and report.passes == 1:
                        on_progress(len(page))
                gone = [pid for pid in copied if pid not in seen]
                index.rebuild_delete(name, gone)
                for pid in gone:
                    del copied[pid]
                if report.failed:
                    report.reason = f"{len(report.failed)} products could not be embedded; the old index is kept"
                    break
                report.version = index.commit_rebuild(name, version)
                if report.version is not None:
                    report.indexed = len(copied)
                    return report
            else:
                report.reason = f"the index was written during each of {REBUILD_MAX_PASSES} passes; nothing switched"
        except BaseException:
            index.abort_rebuild(name)
            raise
        index.abort_rebuild(name)
        return report

    def _stored_photos(self, page: Sequence[Product], report: IngestReport) -> list[tuple[Product, list[Image.Image]]]:
        """Stored products with their photos read back from disk; the unreadable ones are reported."""
        loaded: list[tuple[Product, list[Image.Image]]] = []
        for product in page:
            try:
                # An id stored before ids had a rule would make the index refuse the whole page.
                check_new_product_id(product.product_id)
                if not product.image_ref:
                    raise OSError("no stored image (image_ref is empty)")
                # The box came from the old detector; the new detection sets it again (or leaves none).
                loaded.append((replace(product, box=None), [self._load(p) for p in product.photo_refs]))
            except (OSError, ValueError) as exc:  # ValueError: such an id, or InvalidImage
                report.failed.append((product.product_id, str(exc)))
        return loaded

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
        self, loaded: list[tuple[Product, list[Image.Image]]], with_garment: bool, replace: bool = False
    ) -> IngestReport:
        """Embed every photo and write one point each; replace=True writes only products nobody changed since they
        were read (reindex)."""
        if not loaded:
            return IngestReport()
        items = self._vectors(loaded, with_garment)
        if not replace:
            duplicates = self._duplicates(items)
            skipped = {d.product_id for d in duplicates if d.skipped}
            if skipped:
                items = [item for item in items if item[0].product_id not in skipped]
            if items:
                self.pipeline.index.upsert(items)
            return IngestReport(indexed=len(loaded) - len(skipped), duplicates=duplicates)
        # A product written or deleted while its new vectors were computed keeps that newer write.
        skipped = self.pipeline.index.replace_unchanged(items)
        return IngestReport(
            indexed=len(loaded) - len(skipped), failed=[(pid, CHANGED_WHILE_REINDEXING) for pid in skipped],
        )

    def _duplicates(self, items: Sequence[tuple[Product, dict]]) -> list[Duplicate]:
        """The products of a batch whose main photo duplicates another product's: stored ones (one batched search,
        the product itself excluded) or earlier ones of the batch."""
        mains = [(p, np.asarray(v[IMAGE_VECTOR], np.float32)) for p, v in items if p.photo == 0 and IMAGE_VECTOR in v]
        if not mains:
            return []
        stored = self.pipeline.index.search_batch([
            SearchQuery(vec, 1, IMAGE_VECTOR, filters=SearchFilter(exclude=(p.product_id,))) for p, vec in mains
        ])
        unit = np.stack([vec / max(float(np.linalg.norm(vec)), 1e-12) for _, vec in mains])
        threshold, skip = self.settings.duplicate_distance, self.settings.duplicate_action == "skip"
        hashes: dict[str, str | None] = {}
        found: list[Duplicate] = []
        for i, ((product, _), hits) in enumerate(zip(mains, stored, strict=True)):
            candidates = [(1.0 - h.score, h.product.product_id, h.product.photo_ref) for h in hits[:1]]
            earlier = [j for j in range(i) if mains[j][0].product_id != product.product_id]
            if earlier:
                sims = unit[earlier] @ unit[i]
                j = earlier[int(np.argmax(sims))]
                candidates.append((1.0 - float(sims.max()), mains[j][0].product_id, mains[j][0].image_ref))
            if not candidates:
                continue
            distance, other, ref = min(candidates)
            # Float rounding leaves a copy's distance a hair above 0.
            if distance > threshold + DUPLICATE_TOLERANCE:
                continue
            same = _content_hash(product.image_ref, hashes)
            kind = "exact" if same is not None and same == _content_hash(ref, hashes) else "near"
            found.append(Duplicate(product.product_id, other, kind, round(max(0.0, distance), 6), skip))
        return found

    def _vectors(
        self, loaded: list[tuple[Product, list[Image.Image]]], with_garment: bool,
    ) -> list[tuple[Product, dict]]:
        """Every photo's point (product and vectors) from the current models."""
        if not loaded:
            return []
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
                (product_with(dataclasses.replace(main, photo=k, box=None), v), v.vectors)
                for k, v in enumerate(vectors[1:], start=1)
            ]
        return items


def _content_hash(path: str, cache: dict[str, str | None]) -> str | None:
    """sha256 of a photo file's bytes (None if it cannot be read here), read once per path."""
    if path not in cache:
        try:
            cache[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
        except OSError:
            cache[path] = None
    return cache[path]


def _product(rec: CatalogRecord, paths: list[str]) -> Product:
    """The product a catalog record describes (its photos kept at paths), before its vectors are known."""
    return Product(
        product_id=rec.product_id, category=rec.category, title=rec.title, price=rec.price,
        image_ref=paths[0], tags=list(rec.tags), brand=rec.brand, in_stock=rec.in_stock,
        attributes=dict(rec.attributes), images=paths if len(paths) > 1 else [],
    )
