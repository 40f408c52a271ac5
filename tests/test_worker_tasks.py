"""The ingest task's handling of a message: one bad photo refuses that product only, the rest is indexed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from fashion_search.core.catalog import CatalogRecord
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.workers import tasks
from fashion_search.workers.tasks import decode_photos
from tests.conftest import TEST_REDIS, make_settings, model_pipeline


def test_a_photo_that_is_not_base64_refuses_its_product_only() -> None:
    records = [{"product_id": "p1"}, {"product_id": "p2"}, {"product_id": "p3"}]
    photos = [base64.b64encode(b"\xff\xd8jpeg").decode(), "not base64!", base64.b64encode(b"png").decode()]
    kept, data, report = decode_photos(records, photos)
    assert kept == [records[0], records[2]] and data == [b"\xff\xd8jpeg", b"png"]
    assert report.indexed == 0 and report.failed == [("p2", "photo is not valid base64")]


def test_a_message_whose_lists_differ_in_length_is_refused_whole() -> None:
    with pytest.raises(ValueError, match="2 records but 1 photos"):
        decode_photos([{"product_id": "p1"}, {"product_id": "p2"}], [""])


def test_the_ingest_task_indexes_the_good_products_and_counts_the_whole_message(
    tmp_path: Path, shared_models: dict, small_records: list[CatalogRecord], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path)
    pipeline = model_pipeline(settings, shared_models)
    monkeypatch.setattr(tasks, "_ingestor", Ingestor(pipeline, settings))
    monkeypatch.setattr(tasks.ingest_batch, "update_state", lambda **_: None)  # no broker-side task state here
    photo = base64.b64encode(Path(small_records[0].image_path).read_bytes()).decode()
    records = [
        {"product_id": "t-ok", "image_path": "", "title": "", "category": "", "price": 0.0, "tags": []},
        {"product_id": "t-bad-photo", "image_path": "", "title": "", "category": "", "price": 0.0, "tags": []},
    ]
    result = tasks.ingest_batch.run(records, [photo, "not base64!"])
    assert result == {
        "indexed": 1, "failed": [("t-bad-photo", "photo is not valid base64")], "total": 2, "duplicates": [],
    }
    assert pipeline.index.get("t-ok") is not None
    pipeline.index.close()


def test_redelivered_batches_count_once_and_never_bring_back_older_data(
    tmp_path: Path, shared_models: dict, small_records: list[CatalogRecord], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis

    from fashion_search.workers.jobs import SUPERSEDED, JobStore

    settings = make_settings(tmp_path, redis_url=f"{TEST_REDIS}/14", job_key_prefix=f"fs:test:{tmp_path.name}:")
    pipeline = model_pipeline(settings, shared_models)
    jobs = JobStore(settings, redis.Redis.from_url(settings.redis_url))
    monkeypatch.setattr(tasks, "_ingestor", Ingestor(pipeline, settings))
    monkeypatch.setattr(tasks, "_jobs", jobs)
    monkeypatch.setattr(tasks.ingest_batch, "update_state", lambda **_: None)
    photo = base64.b64encode(Path(small_records[0].image_path).read_bytes()).decode()

    def record(title: str) -> dict[str, object]:
        return {"product_id": "p-1", "image_path": "", "title": title, "category": "", "price": 0.0, "tags": []}

    old_job, old_seq = jobs.create(1)
    jobs.claim(old_seq, ["p-1"])
    new_job, new_seq = jobs.create(1)
    jobs.claim(new_seq, ["p-1"])
    try:
        # The newer job runs first; the older job's batch arrives late, then again (a visibility-timeout redelivery).
        for job_id, seq, title in ((new_job, new_seq, "new"), (old_job, old_seq, "old"), (old_job, old_seq, "old"),
                                   (new_job, new_seq, "new")):
            tasks.ingest_batch.run([record(title)], [photo], job_id=job_id, batch="0", seq=seq)
        stored = pipeline.index.get("p-1")
        assert stored is not None and stored.title == "new"
        assert pipeline.index.stats().count == 1
        old, new = jobs.get(old_job), jobs.get(new_job)
        assert old is not None and new is not None
        assert (new.state, new.processed, new.indexed, new.refused) == ("done", 1, 1, [])
        assert (old.state, old.processed, old.indexed) == ("done", 1, 0)
        assert [r["reason"] for r in old.refused] == [SUPERSEDED]
    finally:
        jobs.redis.delete(*jobs.redis.keys(f"{settings.job_key_prefix}*"))
        pipeline.index.close()


def test_the_rebuild_task_runs_the_ingestors_rebuild_and_reports_the_switch(
    tmp_path: Path, shared_models: dict, small_records: list[CatalogRecord], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path)
    pipeline = model_pipeline(settings, shared_models)
    ingestor = Ingestor(pipeline, settings)
    assert ingestor.ingest_records(small_records[:2]).indexed == 2
    version = pipeline.index.version
    monkeypatch.setattr(tasks, "_ingestor", ingestor)
    result = tasks.rebuild_index.run()
    assert result == {"indexed": 2, "failed": [], "version": version + 1, "passes": 1, "reason": ""}
    assert pipeline.index.stats().count == 2
    pipeline.index.close()
