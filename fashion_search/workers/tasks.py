"""Celery tasks: each runs the same Ingestor as the CLI and the gateway (ingest and reindex)."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Any

from celery import Task

from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.core.settings import get_settings
from fashion_search.pipeline.ingest import Ingestor, IngestReport
from fashion_search.workers import metrics as _metrics  # noqa: F401 - connects the task signals' metrics
from fashion_search.workers.celery_app import celery_app

log = logging.getLogger(__name__)

_lock = threading.Lock()
_ingestor: Ingestor | None = None


def get_ingestor() -> Ingestor:
    """One pipeline per worker process, built on first use (models load once)."""
    global _ingestor
    with _lock:
        if _ingestor is None:
            from fashion_search.pipeline.components import build_pipeline

            settings = get_settings()
            _ingestor = Ingestor(build_pipeline(settings), settings)
        return _ingestor


# Every task retries outages of the services and the broker with jittered backoff; their writes are upserts
# keyed by product id, so a retried (or redelivered) batch is harmless.
RETRY_OPTIONS: dict[str, Any] = {
    "bind": True,
    "autoretry_for": (ServiceUnavailable, ConnectionError, TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": get_settings().task_max_retries,
}


def decode_photos(
    records: list[dict[str, Any]], images_b64: list[str]
) -> tuple[list[dict[str, Any]], list[bytes], IngestReport]:
    """The records whose photo is valid base64, their photos' bytes, and a report refusing the others: a message
    from any producer must not lose its good products to one bad photo."""
    if len(records) != len(images_b64):
        raise ValueError(f"{len(records)} records but {len(images_b64)} photos")
    kept, photos, report = [], [], IngestReport()
    for record, encoded in zip(records, images_b64, strict=True):
        try:
            photos.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, TypeError, ValueError):
            report.failed.append((str(record.get("product_id", "")), "photo is not valid base64"))
            continue
        kept.append(record)
    return kept, photos, report


@celery_app.task(name="fashion_search.ingest_batch", **RETRY_OPTIONS)
def ingest_batch(self: Task, records: list[dict[str, Any]], images_b64: list[str]) -> dict[str, Any]:
    """Index a batch of products sent with their photos; upserts are keyed by product id, so retries are safe."""
    self.update_state(state="PROGRESS", meta={"done": 0, "total": len(records)})
    kept, images, report = decode_photos(records, images_b64)
    report.merge(get_ingestor().ingest_payloads(kept, images))
    log.info("indexed %d products, %d refused", report.indexed, len(report.failed))
    return {"indexed": report.indexed, "failed": report.failed, "total": len(records)}


@celery_app.task(name="fashion_search.reindex_batch", **RETRY_OPTIONS)
def reindex_batch(self: Task, product_ids: list[str]) -> dict[str, Any]:
    """Recompute the vectors of indexed products from their stored images; payloads kept, bad images reported."""
    self.update_state(state="PROGRESS", meta={"done": 0, "total": len(product_ids)})
    report = get_ingestor().reindex(product_ids)
    log.info("reindexed %d products, %d refused", report.indexed, len(report.failed))
    return {"indexed": report.indexed, "failed": report.failed, "total": len(product_ids)}
