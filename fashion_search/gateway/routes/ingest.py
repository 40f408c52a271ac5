"""Bulk ingestion over HTTP: a catalog file becomes a job on the queue; its report is read by id."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, File, HTTPException, Path, UploadFile

from fashion_search.core.catalog import CatalogError, decode_text, parse_catalog
from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.core.settings import Settings
from fashion_search.gateway.auth import requires
from fashion_search.gateway.deps import get_settings
from fashion_search.gateway.responses import ACCESS, INVALID, UNAVAILABLE, Responses, error
from fashion_search.gateway.schemas import JobAccepted, JobOut
from fashion_search.gateway.uploads import read_upload
from fashion_search.workers.jobs import JobStore

router = APIRouter(prefix="/v1", tags=["ingest"], responses=ACCESS)

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
# A catalog's format by its file name, else by its declared content type.
SUFFIXES = {".csv": ".csv", ".jsonl": ".jsonl", ".ndjson": ".jsonl"}
CONTENT_TYPES = {"text/csv": ".csv", "application/jsonl": ".jsonl", "application/x-ndjson": ".jsonl",
                 "application/x-jsonlines": ".jsonl"}
CATALOG: Responses = {
    400: error("the multipart body cannot be read"), 413: error("catalog file too large"),
    415: error("neither a CSV nor a JSONL file"), **INVALID, **UNAVAILABLE,
}


def _suffix(upload: UploadFile) -> str:
    suffix = SUFFIXES.get(PurePath(upload.filename or "").suffix.lower())
    kind = (upload.content_type or "").split(";")[0].strip().lower()
    if suffix is None and (suffix := CONTENT_TYPES.get(kind)) is None:
        raise HTTPException(415, f"catalog {upload.filename!r} ({kind or 'no content type'}): send a .csv or .jsonl")
    return suffix


def _jobs(settings: Settings) -> JobStore:
    if not settings.broker_url:
        raise ServiceUnavailable("queue", "ingest jobs need one: this gateway has no broker (FS_BROKER_URL)")
    return JobStore(settings)


@router.post(
    "/ingest", response_model=JobAccepted, status_code=202, responses=CATALOG, dependencies=[requires("catalog")],
)
def ingest_catalog(
    catalog: Annotated[UploadFile, File(description="a JSONL or CSV catalog; photos by image_url")],
    settings: Annotated[Settings, Depends(get_settings)],
) -> JobAccepted:
    """Queue a catalog for ingestion by the workers; answers at once with the job's id."""
    from fashion_search.workers.enqueue import enqueue_catalog

    suffix = _suffix(catalog)
    name = PurePath(catalog.filename or "catalog").name
    try:
        records = parse_catalog(decode_text(read_upload(catalog, settings), name), suffix, name, None)
    except CatalogError as exc:
        raise HTTPException(422, str(exc)) from None
    if not records:
        raise HTTPException(422, f"{name}: no records")
    jobs = _jobs(settings)
    try:
        job_id = enqueue_catalog(records, settings, jobs)
    except (redis.RedisError, OSError) as exc:  # kombu's connection errors are OSErrors
        raise ServiceUnavailable("queue", f"unreachable: {exc}") from None
    return JobAccepted(job_id=job_id, total=len(records))


@router.get(
    "/jobs/{job_id}", response_model=JobOut, responses={404: error("unknown job"), **INVALID, **UNAVAILABLE},
    dependencies=[requires("catalog")],
)
def get_job(
    job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the id POST /v1/ingest answered")],
    settings: Annotated[Settings, Depends(get_settings)],
) -> JobOut:
    """An ingest job's state, counts, refused records (with reasons) and what remains."""
    try:
        report = JobStore(settings).get(job_id)
    except redis.RedisError as exc:
        raise ServiceUnavailable("job store", f"unreachable: {exc}") from None
    if report is None:
        raise HTTPException(404, f"unknown job {job_id!r} (or expired)")
    return JobOut(**report.to_dict())
