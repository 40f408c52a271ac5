"""Reindexing in-process: new vectors from the stored images, payloads kept, unreadable images reported."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR, Embedder
from fashion_search.core.images import decode_image
from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import CHANGED_WHILE_REINDEXING, Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline
from fashion_search.services.search.factory import make_local_index
from tests.conftest import make_settings

VAL = Path(__file__).resolve().parent / "data" / "val_sample"
CLASSES = ("dress", "hat", "pants", "shoes", "t-shirt")
GOOD, CORRUPT, MISSING = ("p0", "p1", "p2"), "p3", "p4"


def recolored(embedder: Embedder, color_weight: float) -> Embedder:
    """The same loaded model weighting colour differently: what a model upgrade looks like to the index."""
    embedder.load()  # type: ignore[attr-defined]
    clone = copy.copy(embedder)
    clone.settings = embedder.settings.model_copy(update={"color_weight": color_weight})  # type: ignore[attr-defined]
    return clone


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Batches of two make a five-product catalog span several scroll pages and several upserts.
    return make_settings(tmp_path, ingest_batch_size=2)


@pytest.fixture
def indexed(settings: Settings, shared_models: dict) -> Iterator[tuple[SearchPipeline, SearchPipeline, list[bytes]]]:
    """Five uploaded products indexed with the current embedder; a second pipeline over the same index
    embeds with a changed colour weight (the "upgraded" models)."""
    old, new = shared_models["embedder"], recolored(shared_models["embedder"], 1.0)
    det, seg = shared_models["detector"], shared_models["segmenter"]
    index = make_local_index(settings, old.dim)
    images = [sorted((VAL / c).glob("*.jpg"))[0].read_bytes() for c in CLASSES]
    payloads = [
        {"product_id": f"p{i}", "image_path": "", "title": f"Product {i}", "category": c, "price": 10.5 + i,
         "tags": ["sale", c]}
        for i, c in enumerate(CLASSES)
    ]
    report = Ingestor(SearchPipeline(settings, det, seg, old, index), settings).ingest_payloads(payloads, images)
    assert report.indexed == len(CLASSES) and not report.failed
    yield SearchPipeline(settings, det, seg, old, index), SearchPipeline(settings, det, seg, new, index), images
    index.close()


def _top(pipeline: SearchPipeline, vector: object, name: str = IMAGE_VECTOR) -> tuple[str, float]:
    hit = pipeline.index.search(vector, top_k=1, vector_name=name)[0]  # type: ignore[arg-type]
    return hit.product.product_id, hit.score


def test_reindex_all_updates_vectors_keeps_payload_and_reports_bad_images(
    indexed: tuple[SearchPipeline, SearchPipeline, list[bytes]], settings: Settings,
) -> None:
    old, new, images = indexed
    index = new.index
    before = {f"p{i}": index.get(f"p{i}") for i in range(len(CLASSES))}
    stats = index.stats()
    old_name, new_name = old.vectors_model(), new.vectors_model()
    assert stats.embedders == {old_name: len(CLASSES)} and old.stale_index() is None
    assert new.stale_index().startswith(f"{len(CLASSES)} of {len(CLASSES)} products")  # type: ignore[union-attr]
    decoded = [decode_image(data, settings) for data in images]
    old_vecs = old.catalog_vectors(decoded)
    new_vecs = new.catalog_vectors(decoded)
    for i, pid in enumerate(GOOD):
        found, score = _top(new, new_vecs[i].vectors[IMAGE_VECTOR])
        assert found != pid or score < 0.999, "the changed colour weight must change the vectors"

    # One stored image is overwritten with garbage, another one is gone.
    Path(before[CORRUPT].image_ref).write_bytes(b"definitely not a jpeg")
    Path(before[MISSING].image_ref).unlink()
    progress: list[int] = []
    report = Ingestor(new, settings).reindex(on_progress=progress.append)

    assert report.indexed == len(GOOD)
    assert dict(report.failed).keys() == {CORRUPT, MISSING}
    assert "not an image" in dict(report.failed)[CORRUPT]
    assert "No such file" in dict(report.failed)[MISSING]
    assert sum(progress) == len(CLASSES) and len(progress) == 3
    after = index.stats()
    assert after.count == stats.count and after.version > stats.version
    # Reindexed products carry the new model's name; the two that failed keep the old one, and say so.
    assert after.embedders == {new_name: len(GOOD), old_name: 2}
    assert new.stale_index().startswith(f"2 of {len(CLASSES)} products")  # type: ignore[union-attr]
    for pid, product in before.items():
        assert index.get(pid) == product  # id, category, title, price, tags, image ref and box all kept
    for i, pid in enumerate(GOOD):
        assert _top(new, new_vecs[i].vectors[IMAGE_VECTOR]) == (pid, pytest.approx(1.0, abs=1e-4))
        assert _top(new, new_vecs[i].vectors[GARMENT_VECTOR], GARMENT_VECTOR) == (pid, pytest.approx(1.0, abs=1e-4))
    # The products whose image could not be read still hold their old vectors, untouched.
    for i, pid in ((3, CORRUPT), (4, MISSING)):
        assert _top(new, old_vecs[i].vectors[IMAGE_VECTOR]) == (pid, pytest.approx(1.0, abs=1e-4))


def test_a_product_stored_before_ids_had_a_rule_is_reported_and_the_rest_reindexed(
    indexed: tuple[SearchPipeline, SearchPipeline, list[bytes]], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new, images = indexed
    legacy = replace(new.index.get("p0"), product_id="legacy id/1")  # type: ignore[type-var]
    vectors = old.catalog_vectors([decode_image(images[0], settings)])[0].vectors
    with monkeypatch.context() as m:  # as an index written by an earlier version would hold it
        m.setattr("fashion_search.services.search.points.check_new_product_id", lambda pid: pid)
        new.index.upsert([(legacy, vectors)])
    report = Ingestor(new, settings).reindex()
    assert report.indexed == len(CLASSES)
    assert [pid for pid, _ in report.failed] == ["legacy id/1"] and "1-128 characters" in report.failed[0][1]
    assert new.index.get("legacy id/1") == legacy  # reported, kept as it was


def test_reindex_given_ids_twice_is_harmless(
    indexed: tuple[SearchPipeline, SearchPipeline, list[bytes]], settings: Settings,
) -> None:
    old, new, images = indexed
    index = new.index
    before = index.get("p1")
    ingestor = Ingestor(new, settings)
    # A retried task runs the same batch again: same vectors, same payload, nothing added.
    for _ in range(2):
        report = ingestor.reindex(["p1", "unknown", "p1"])
        assert report.indexed == 1
        assert report.failed == [("unknown", "not in the index")]
    assert index.stats().count == len(CLASSES)
    assert index.get("p1") == before
    vec = new.catalog_vectors([decode_image(images[1], settings)])[0].vectors[IMAGE_VECTOR]
    assert _top(new, vec) == ("p1", pytest.approx(1.0, abs=1e-4))
    # Products not named keep their old vectors.
    vec0 = old.catalog_vectors([decode_image(images[0], settings)])[0].vectors[IMAGE_VECTOR]
    assert _top(new, vec0) == ("p0", pytest.approx(1.0, abs=1e-4))


def test_a_product_written_or_deleted_while_reindexing_keeps_the_newer_write(
    indexed: tuple[SearchPipeline, SearchPipeline, list[bytes]], settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new, images = indexed
    index = new.index
    edited = replace(index.get("p0"), title="Edited by the merchant")  # type: ignore[type-var]
    compute = new.catalog_vectors
    events: list[str] = []

    def meanwhile(imgs: list, with_garment: bool = True) -> list:
        # While the first page's new vectors are computed, the merchant edits p0 and deletes p1.
        if not events:
            events.append("edit")
            index.upsert([(edited, old.catalog_vectors([decode_image(images[0], settings)])[0].vectors)])
            index.delete(["p1"])
        return compute(imgs, with_garment)

    monkeypatch.setattr(new, "catalog_vectors", meanwhile)
    report = Ingestor(new, settings).reindex(["p0", "p1", "p2"])  # pages of two: [p0, p1], [p2]
    assert report.indexed == 1
    assert report.failed == [("p0", CHANGED_WHILE_REINDEXING), ("p1", CHANGED_WHILE_REINDEXING)]
    assert index.get("p0") == edited and index.get("p1") is None
    assert index.stats().count == len(CLASSES) - 1
    vec2 = compute([decode_image(images[2], settings)])[0].vectors[IMAGE_VECTOR]
    assert _top(new, vec2) == ("p2", pytest.approx(1.0, abs=1e-4))


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI's settings on an empty Edge index under tmp_path, with no broker and no remote service."""
    from fashion_search.core.settings import get_settings

    for name, value in {"FS_DATA_DIR": str(tmp_path), "FS_INDEX_BACKEND": "edge", "FS_BROKER_URL": "",
                        "FS_SEARCH_URL": "", "FS_DETECTOR_URL": "", "FS_SEGMENTER_URL": "",
                        "FS_EMBEDDER_URL": ""}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_reindex_in_process_and_queue_without_broker(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fashion_search.cli.main import main

    # Nothing is indexed, so no model is ever loaded: this checks the wiring, the tests above the work.
    assert main(["reindex"]) == 0
    assert "reindexed 0 products; 0 refused" in capsys.readouterr().out
    assert main(["reindex", "ghost"]) == 1
    assert "ghost: not in the index" in capsys.readouterr().out
    assert main(["reindex", "--queue"]) == 2
    assert "FS_BROKER_URL" in capsys.readouterr().err
