"""Celery tasks: each runs the same Ingestor as the CLI and the gateway (ingest and reindex)."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Any

from celery import Task
from celery.signals import worker_ready
from PIL import Image

from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.core.settings import get_settings
from fashion_search.pipeline.ingest import Ingestor, IngestReport
from fashion_search.workers import metrics as _metrics  # noqa: F401 - connects the task signals' metrics
from fashion_search.workers.celery_app import celery_app
from fashion_search.workers.jobs import SUPERSEDED, JobStore, refusal

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


@worker_ready.connect
def _load_models(**_: object) -> None:
    """Load and warm every model before the first batch arrives (tracing takes seconds on a CPU)."""
    get_ingestor().pipeline.catalog_vectors([Image.new("RGB", (64, 64), "white")])


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
            # "": no photo sent; the worker reads the record's path or fetches its image_url.
            photos.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, TypeError, ValueError):
            report.failed.append((str(record.get("product_id", "")), "photo is not valid base64"))
            continue
        kept.append(record)
    return kept, photos, report


class IngestTask(Task):
    """An ingest batch whose job (if any) learns of its products even when the task fails for good."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: object) -> None:
        """Count a batch that failed after its retries as refused, so the job's report stays true and ends."""
        records = args[0] if args else kwargs.get("records", [])
        job_id = kwargs.get("job_id") or (args[2] if len(args) > 2 else "")
        batch = kwargs.get("batch") or (args[3] if len(args) > 3 else task_id)
        if job_id:
            why = f"task failed: {type(exc).__name__}: {exc}"
            refused = [refusal(str(r.get("product_id", "")), why, r) for r in records]
            get_jobs().record_batch(job_id, str(batch), len(records), 0, refused)


_jobs: JobStore | None = None


def get_jobs() -> JobStore:
    """One job store per worker process."""
    global _jobs
    with _lock:
        if _jobs is None:
            _jobs = JobStore(get_settings())
        return _jobs


# The job store holds the results (follow_job), so the result backend is not written.
@celery_app.task(name="fashion_search.ingest_batch", base=IngestTask, ignore_result=True, **RETRY_OPTIONS)
def ingest_batch(
    self: Task, records: list[dict[str, Any]], images_b64: list[str], job_id: str = "", batch: str = "",
    seq: int = 0,
) -> dict[str, Any]:
    """Index a batch of products, each sent with its photo or "" (its URL is fetched); the models run on the whole
    batch. Upserts are keyed by product id and the job counts each batch once, so redelivery is harmless; a product
    that a newer job (higher seq) holds is left alone, so a late delivery never brings back older data."""
    self.update_state(state="PROGRESS", meta={"done": 0, "total": len(records)})
    kept, images, report = decode_photos(records, images_b64)
    if seq:
        newer = get_jobs().superseded(seq, [str(r.get("product_id", "")) for r in kept])
        report.failed.extend((pid, SUPERSEDED) for pid in sorted(newer))
        pairs = [(r, img) for r, img in zip(kept, images, strict=True) if str(r.get("product_id", "")) not in newer]
        kept, images = [r for r, _ in pairs], [img for _, img in pairs]
    report.merge(get_ingestor().ingest_payloads(kept, images))
    log.info("indexed %d products, %d refused", report.indexed, len(report.failed))
    if job_id:
        by_id = {str(r.get("product_id", "")): r for r in records}
        refused = [refusal(pid, why, by_id.get(pid)) for pid, why in report.failed]
        get_jobs().record_batch(job_id, batch or self.request.id, len(records), report.indexed, refused,
                                [d.to_dict() for d in report.duplicates])
    return {"indexed": report.indexed, "failed": report.failed, "total": len(records),
            "duplicates": [d.to_dict() for d in report.duplicates]}


@celery_app.task(name="fashion_search.reindex_batch", **RETRY_OPTIONS)
def reindex_batch(self: Task, product_ids: list[str]) -> dict[str, Any]:
    """Recompute the vectors of indexed products from their stored images; payloads kept, bad images reported."""
    self.update_state(state="PROGRESS", meta={"done": 0, "total": len(product_ids)})
    report = get_ingestor().reindex(product_ids)
    log.info("reindexed %d products, %d refused", report.indexed, len(report.failed))
    return {"indexed": report.indexed, "failed": report.failed, "total": len(product_ids)}


@celery_app.task(name="fashion_search.rebuild_index", bind=True, acks_late=False)
def rebuild_index(self: Task) -> dict[str, Any]:
    """Rebuild the whole collection beside the served one and switch to it (Ingestor.rebuild); not retried: a failed
    rebuild leaves the old collection served and is run again by hand."""
    report = get_ingestor().rebuild()
    log.info("rebuild: %d products, %d refused, version %s", report.indexed, len(report.failed), report.version)
    return {"indexed": report.indexed, "failed": report.failed, "version": report.version, "passes": report.passes,
            "reason": report.reason}
