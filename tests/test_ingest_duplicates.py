"""Duplicate photos at ingest: a copied photo under another id (exact) and a re-encoded, resized one (near) are
reported (and skipped when so configured); the report reaches the CLI output and the job status."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import Duplicate, Ingestor, IngestReport
from fashion_search.pipeline.search_pipeline import SearchPipeline
from fashion_search.services.search.factory import make_local_index
from tests.conftest import TEST_REDIS, make_settings

VAL = Path(__file__).resolve().parent / "data" / "val_sample"
CLASSES = ("dress", "hat", "pants", "shoes", "t-shirt")


def reencoded(data: bytes, quality: int = 70, scale: float = 0.8) -> bytes:
    """The same photo saved again smaller, at another JPEG quality: what a shop's second upload often is."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((int(img.width * scale), int(img.height * scale)), Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def record(pid: str, category: str) -> dict[str, object]:
    return {"product_id": pid, "image_path": "", "title": pid, "category": category, "price": 1.0}


@pytest.fixture(params=["edge", "qdrant"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, index_backend=request.param)


@pytest.fixture
def catalog(settings: Settings, shared_models: dict) -> Iterator[tuple[SearchPipeline, list[bytes]]]:
    """Five products of five classes, each with its own photo."""
    m = shared_models
    index = make_local_index(settings, m["embedder"].dim)
    pipeline = SearchPipeline(settings, m["detector"], m["segmenter"], m["embedder"], index)
    photos = [sorted((VAL / c).glob("*.jpg"))[0].read_bytes() for c in CLASSES]
    report = Ingestor(pipeline, settings).ingest_payloads([record(f"p{i}", c) for i, c in enumerate(CLASSES)], photos)
    assert report.indexed == len(CLASSES) and not report.duplicates  # five different photos: no duplicate
    yield pipeline, photos
    index.close()


def test_copied_and_reencoded_photos_of_other_products_are_reported_and_still_indexed(
    catalog: tuple[SearchPipeline, list[bytes]], settings: Settings,
) -> None:
    pipeline, photos = catalog
    others = [sorted((VAL / c).glob("*.jpg"))[1].read_bytes() for c in CLASSES[:2]]
    payloads = [record("copy0", "dress"), record("again0", "dress"), record("small1", "hat"),
                record("new0", "dress"), record("new1", "hat"), record("p2", "pants")]
    # copy0 and again0: p0's bytes (again0 is also a copy of copy0, earlier in the batch); small1: p1 re-encoded;
    # new0/new1: other photos of the same classes; p2 again under its own id: an update, not a duplicate.
    sent = [photos[0], photos[0], reencoded(photos[1]), others[0], others[1], photos[2]]
    report = Ingestor(pipeline, settings).ingest_payloads(payloads, sent)

    assert report.indexed == len(payloads) and not report.failed
    found = {d.product_id: d for d in report.duplicates}
    assert set(found) == {"copy0", "again0", "small1"}
    assert found["copy0"].duplicate_of == "p0" and found["copy0"].kind == "exact"
    assert found["copy0"].distance < 1e-4
    assert found["again0"].duplicate_of in ("p0", "copy0") and found["again0"].kind == "exact"
    assert found["small1"].duplicate_of == "p1" and found["small1"].kind == "near"
    assert 0 < found["small1"].distance <= settings.duplicate_distance
    assert not any(d.skipped for d in report.duplicates)
    assert pipeline.index.get("copy0") is not None and pipeline.index.get("small1") is not None


def test_duplicates_are_skipped_when_so_configured(
    catalog: tuple[SearchPipeline, list[bytes]], settings: Settings,
) -> None:
    pipeline, photos = catalog
    skipping = settings.model_copy(update={"duplicate_action": "skip"})
    report = Ingestor(pipeline, skipping).ingest_payloads(
        [record("copy3", "shoes"), record("new2", "pants")],
        [photos[3], sorted((VAL / "pants").glob("*.jpg"))[1].read_bytes()],
    )
    assert report.indexed == 1 and [(d.product_id, d.duplicate_of, d.skipped) for d in report.duplicates] == [
        ("copy3", "p3", True)]
    assert pipeline.index.get("copy3") is None and pipeline.index.get("new2") is not None

    from fastapi.testclient import TestClient

    from fashion_search.gateway.app import create_app

    with TestClient(create_app(skipping, pipeline)) as client:
        refused = client.post("/v1/products", data={"product_id": "copy4"}, files={"image": ("a.jpg", photos[4])})
        added = client.post("/v1/products", data={"product_id": "p4"}, files={"image": ("a.jpg", photos[4])})
    assert refused.status_code == 409 and "exact duplicate of product 'p4'" in refused.json()["detail"]
    assert added.status_code == 201  # the product's own photo again: an update, not a duplicate
    assert pipeline.index.get("copy4") is None


def test_duplicates_reach_the_cli_output_and_the_job_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_models: dict,
) -> None:
    from fastapi.testclient import TestClient

    from fashion_search.cli.commands import _print_ingest_report
    from fashion_search.gateway.schemas import JobOut
    from fashion_search.workers.jobs import JobStore, refusal

    dup = Duplicate("copy0", "p0", "exact", 0.0)
    assert _print_ingest_report(IngestReport(indexed=1, duplicates=[dup])) == 0
    assert "copy0: exact duplicate of p0 (cosine distance 0.0000)" in capsys.readouterr().out

    settings = make_settings(tmp_path, redis_url=f"{TEST_REDIS}/14", broker_url=f"{TEST_REDIS}/14")
    jobs = JobStore(settings)
    job_id, _ = jobs.create(3)
    near = Duplicate("small1", "p1", "near", 0.0123, skipped=True)
    assert jobs.record_batch(job_id, "b1", 3, 2, [refusal("bad", "unreadable")], [dup.to_dict(), near.to_dict()])
    assert not jobs.record_batch(job_id, "b1", 3, 2, [], [dup.to_dict()])  # a redelivered batch counts once
    report = jobs.get(job_id)
    assert report is not None and report.duplicates == [dup.to_dict(), near.to_dict()]
    assert [r["product_id"] for r in report.refused] == ["bad"]
    assert JobOut(**report.to_dict()).duplicates[1].kind == "near"

    from fashion_search.gateway.app import create_app

    m = shared_models
    index = make_local_index(settings, m["embedder"].dim)
    pipeline = SearchPipeline(settings, m["detector"], m["segmenter"], m["embedder"], index)
    with TestClient(create_app(settings, pipeline)) as client:
        body = client.get(f"/v1/jobs/{job_id}").json()
    index.close()
    assert body["duplicates"][0] == dup.to_dict() and body["state"] == "done"
