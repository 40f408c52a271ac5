"""Catalog ingestion: the one implementation used by the CLI, the gateway and the Celery task."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fashion_search.catalog import CatalogRecord
from fashion_search.domain import Product
from fashion_search.images import InvalidImage, decode_image
from fashion_search.pipeline import SearchPipeline, product_with
from fashion_search.settings import Settings

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


class Ingestor:
    """Turns catalog records into indexed products, in batches, skipping (and reporting) bad images."""

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
            loaded: list[tuple[CatalogRecord, Image.Image]] = []
            for rec in chunk:
                try:
                    loaded.append((rec, decode_image(Path(rec.image_path).read_bytes(), self.settings)))
                except (OSError, InvalidImage) as exc:
                    report.failed.append((rec.product_id, str(exc)))
            report.merge(self._index(loaded, with_garment))
            if on_progress:
                on_progress(len(chunk))
        return report

    def ingest_payloads(self, payloads: Sequence[dict[str, object]], image_data: Sequence[bytes]) -> IngestReport:
        """Index records that arrive with their image bytes (Celery tasks, HTTP uploads); images are stored."""
        report = IngestReport()
        loaded: list[tuple[CatalogRecord, Image.Image]] = []
        for payload, data in zip(payloads, image_data, strict=True):
            rec = CatalogRecord(**payload)  # type: ignore[arg-type]
            try:
                img = decode_image(data, self.settings)
            except InvalidImage as exc:
                report.failed.append((rec.product_id, str(exc)))
                continue
            rec.image_path = store_image(data, self.settings)
            loaded.append((rec, img))
        report.merge(self._index(loaded, True))
        return report

    def _index(self, loaded: list[tuple[CatalogRecord, Image.Image]], with_garment: bool) -> IngestReport:
        if not loaded:
            return IngestReport()
        indexed = self.pipeline.catalog_vectors([img for _, img in loaded], with_garment=with_garment)
        items = []
        for (rec, _), vecs in zip(loaded, indexed, strict=True):
            product = Product(
                product_id=rec.product_id, category=rec.category, title=rec.title, price=rec.price,
                image_ref=rec.image_path, tags=list(rec.tags),
            )
            items.append((product_with(product, vecs), vecs.vectors))
        self.pipeline.index.upsert(items)
        return IngestReport(indexed=len(items))
