"""Producer side: split a catalog (or the index, to reindex it) into tasks and follow their progress."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from celery.result import AsyncResult
from tqdm import tqdm

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import VectorIndex
from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import IngestReport, id_batches, reindex_page_size, scroll_pages

POLL_S = 0.5


def enqueue_catalog(records: Sequence[CatalogRecord], settings: Settings) -> tuple[list[AsyncResult], IngestReport]:
    """Send one task per batch with the images inlined (workers need not share our disk)."""
    from fashion_search.workers.tasks import ingest_batch

    results: list[AsyncResult] = []
    unreadable = IngestReport()
    batch = max(1, settings.ingest_batch_size)
    for start in range(0, len(records), batch):
        payloads, images = [], []
        for rec in records[start:start + batch]:
            try:
                photos = [base64.b64encode(Path(p).read_bytes()).decode() for p in rec.photo_paths]
            except OSError as exc:
                unreadable.failed.append((rec.product_id, f"cannot read a photo: {exc}"))
                continue
            # One photo travels as a string, as producers of one photo per product send it.
            images.append(photos[0] if len(photos) == 1 else photos)
            payloads.append(rec.to_dict())
        if payloads:
            results.append(ingest_batch.delay(payloads, images))
    return results, unreadable


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
