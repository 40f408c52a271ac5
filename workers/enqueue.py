"""Producer side: split a catalog into ingest tasks and follow their progress."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from pathlib import Path

from celery.result import AsyncResult
from tqdm import tqdm

from fashion_search.catalog import CatalogRecord
from fashion_search.ingest import IngestReport
from fashion_search.settings import Settings

POLL_S = 0.5


def enqueue_catalog(records: Sequence[CatalogRecord], settings: Settings) -> tuple[list[AsyncResult], IngestReport]:
    """Send one task per batch with the images inlined (workers need not share our disk)."""
    from workers.tasks import ingest_batch

    results: list[AsyncResult] = []
    unreadable = IngestReport()
    batch = max(1, settings.ingest_batch_size)
    for start in range(0, len(records), batch):
        payloads, images = [], []
        for rec in records[start:start + batch]:
            try:
                images.append(base64.b64encode(Path(rec.image_path).read_bytes()).decode())
            except OSError as exc:
                unreadable.failed.append((rec.product_id, f"cannot read {rec.image_path}: {exc}"))
                continue
            payloads.append(rec.to_dict())
        if payloads:
            results.append(ingest_batch.delay(payloads, images))
    return results, unreadable


def wait_for(results: Sequence[AsyncResult], total: int, timeout_s: float | None = None) -> IngestReport:
    """Block until every task finished, with a progress bar over products; failed tasks are reported."""
    report = IngestReport()
    pending = list(results)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with tqdm(total=total, unit="product", desc="ingest (queue)") as bar:
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
                    raise TimeoutError(f"{len(pending)} ingest tasks still running after {timeout_s}s")
                time.sleep(POLL_S)
    return report
