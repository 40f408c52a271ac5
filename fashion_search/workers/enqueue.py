"""Producer side: split a catalog (or the index, to reindex it) into tasks and follow their progress."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from celery.result import AsyncResult
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import VectorIndex
from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import IngestReport, id_batches, reindex_page_size, scroll_pages
from fashion_search.workers.jobs import DONE, JobReport, JobStore, refusal

POLL_S = 0.5


def enqueue_catalog(records: Sequence[CatalogRecord], settings: Settings, jobs: JobStore | None = None) -> str:
    """Create a job and send one task per batch: photos on this disk inlined (workers need not share it), photos
    by URL left to the worker to fetch. Returns the job id; a photo that cannot be read here is refused at once."""
    from fashion_search.workers.celery_app import celery_app

    jobs = jobs or JobStore(settings)
    job_id, seq = jobs.create(len(records))
    batch = max(1, settings.ingest_batch_size)
    # The broker these settings name (the process's app may have been configured from other settings).
    with celery_app.connection_for_write(settings.broker_url or settings.redis_url) as connection:
        _send_batches(records, batch, (job_id, seq), jobs, connection)
    return job_id


def _send_batches(
    records: Sequence[CatalogRecord], batch: int, job: tuple[str, int], jobs: JobStore, connection: Any,
) -> None:
    """One task per batch of the job; photos that cannot be read here are refused at once."""
    job_id, seq = job
    from fashion_search.workers.tasks import ingest_batch

    for number, start in enumerate(range(0, len(records), batch)):
        chunk = records[start:start + batch]
        payloads, images, unreadable = [], [], []
        for rec in chunk:
            try:
                images.append(_inline_photo(rec))
            except OSError as exc:
                unreadable.append(refusal(rec.product_id, f"cannot read {rec.image_path}: {exc}", rec.to_dict()))
                continue
            payloads.append(rec.to_dict())
        if unreadable:
            jobs.record_batch(job_id, f"{number}:unreadable", len(unreadable), 0, unreadable)
        if payloads:
            jobs.claim(seq, [str(p["product_id"]) for p in payloads])
            ingest_batch.apply_async(
                (payloads, images), {"job_id": job_id, "batch": str(number), "seq": seq}, connection=connection,
            )


def _inline_photo(rec: CatalogRecord) -> str:
    """The record's photo as base64 if it is on this disk; "" (the worker fetches image_url) if it has a URL only
    or its path is not here but its URL is."""
    if rec.image_path and not (rec.image_url and not Path(rec.image_path).is_file()):
        return base64.b64encode(Path(rec.image_path).read_bytes()).decode()
    return ""


def records_to_retry(report: JobReport) -> list[CatalogRecord]:
    """The refused records of a job, to send again."""
    records = []
    for entry in report.refused:
        record = entry.get("record") or {}
        try:
            records.append(CatalogRecord(**record))
        except TypeError:  # refused before it was a record (a bad producer's message): nothing to re-run
            continue
    return records


def follow_job(
    jobs: JobStore, job_id: str, timeout_s: float | None = None, desc: str = "ingest (queue)",
) -> JobReport:
    """Block until the job processed every product, with a progress bar; returns its report."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    report = jobs.get(job_id)
    if report is None:
        raise KeyError(f"no ingest job {job_id!r} (unknown, or expired)")
    with tqdm(total=report.total, unit="product", desc=desc) as bar:
        while True:
            report = jobs.get(job_id)
            if report is None:
                raise KeyError(f"ingest job {job_id!r} expired while it was followed")
            bar.update(report.processed - bar.n)
            if report.state == DONE:
                return report
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: {report.remaining} products still to do after {timeout_s}s")
            time.sleep(POLL_S)


def enqueue_reindex(
    index: VectorIndex, settings: Settings, product_ids: Sequence[str] | None = None,
) -> tuple[list[AsyncResult], int]:
    """Send one reindex task per batch of product ids (given, or every product, paged from the index).

    Returns the tasks and how many ids they carry. Workers read each product and its stored image themselves.
    """
    from fashion_search.workers.tasks import reindex_batch

    batch = reindex_page_size(settings)
    batches: Iterable[list[str]] = (
        id_batches(product_ids, batch) if product_ids is not None
        else ([p.product_id for p in page] for page in scroll_pages(index, batch))
    )
    results: list[AsyncResult] = []
    total = 0
    for chunk in batches:
        results.append(reindex_batch.delay(chunk))
        total += len(chunk)
    return results, total


def wait_for(
    results: Sequence[AsyncResult], total: int, timeout_s: float | None = None, desc: str = "ingest (queue)",
) -> IngestReport:
    """Block until every task finished, with a progress bar over products; failed tasks are reported."""
    report = IngestReport()
    pending = list(results)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with tqdm(total=total, unit="product", desc=desc) as bar:
        while pending:
            still = []
            for res in pending:
                if not res.ready():
                    still.append(res)
                    continue
                if res.successful():
                    value = res.result
                    report.indexed += int(value["indexed"])
                    report.failed.extend((pid, why) for pid, why in value["failed"])
                    bar.update(int(value["total"]))
                else:
                    report.failed.append((f"task:{res.id}", repr(res.result)))
            pending = still
            if pending:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} tasks still running after {timeout_s}s")
                time.sleep(POLL_S)
    return report
