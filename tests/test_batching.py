"""Dynamic batching with the real models on sample catalog photos: batched outputs equal one-at-a-time outputs,
a lone request runs at once, a full queue refuses at once, a request past its deadline leaves the queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fashion_search.core.batching import BatchPolicy, DynamicBatcher
from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.deadlines import deadline_in
from fashion_search.core.domain import Box
from fashion_search.core.unavailable import DeadlineExceeded, Overloaded
from fashion_search.services.detector.centernet import SceneDetector
from fashion_search.services.embedder.model import GarmentEmbedder
from fashion_search.services.segmenter.mask_net import MaskSegmenter
from tests.conftest import make_settings

THREADS = 6
# Long enough that threads started together always meet in one queue, even on a busy machine.
GATHER_DELAY_MS = 300.0


@pytest.fixture(scope="module")
def photos(sample_records: list[CatalogRecord]) -> list[Image.Image]:
    """Six real catalog photos of different classes."""
    seen: dict[str, CatalogRecord] = {}
    for rec in sample_records:
        seen.setdefault(rec.category, rec)
    return [Image.open(r.image_path).convert("RGB") for r in list(seen.values())[:THREADS]]


@pytest.fixture(scope="module")
def batched_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three batching models with batching on, a long gathering delay, loaded once."""
    knobs: dict[str, object] = {}
    for model in ("detector", "segmenter", "embedder"):
        knobs.update({f"{model}_batching": "on", f"{model}_max_queue_delay_ms": GATHER_DELAY_MS,
                      f"{model}_max_batch_size": THREADS})
    settings = make_settings(tmp_path_factory.mktemp("batching"), **knobs)
    models = {"detector": SceneDetector(settings), "segmenter": MaskSegmenter(settings),
              "embedder": GarmentEmbedder(settings)}
    for model in models.values():
        model.load()
    return models


def _together(fn: Callable[[int], Any], n: int) -> list[Any]:
    """fn(0..n-1), each in its own thread, all started at once; results in order (errors re-raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # surfaced in the test thread below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


def _batched(batcher: DynamicBatcher, since: int) -> list[int]:
    return batcher.batch_sizes[since:]


def test_embedder_batched_vectors_equal_one_at_a_time(batched_models: dict, photos: list[Image.Image]) -> None:
    embedder: GarmentEmbedder = batched_models["embedder"]
    alone = [embedder.embed([p])[0] for p in photos]  # sequential: each is a batch of one
    since = len(embedder._batcher.batch_sizes)
    together = _together(lambda i: embedder.embed([photos[i]])[0], len(photos))
    assert max(_batched(embedder._batcher, since)) > 1, "the concurrent requests were never batched"
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_detector_batched_detections_equal_one_at_a_time(batched_models: dict, photos: list[Image.Image]) -> None:
    detector: SceneDetector = batched_models["detector"]
    alone = [detector.detect(p) for p in photos]
    since = len(detector._batcher.batch_sizes)
    together = _together(lambda i: detector.detect(photos[i]), len(photos))
    assert max(_batched(detector._batcher, since)) > 1
    assert any(alone), "the photos should hold garments"
    for a, b in zip(alone, together, strict=True):
        assert [d.category for d in a] == [d.category for d in b]
        for da, db in zip(a, b, strict=True):
            assert da.score == pytest.approx(db.score, abs=1e-4)
            assert np.allclose([da.box.x0, da.box.y0, da.box.x1, da.box.y1],
                               [db.box.x0, db.box.y0, db.box.x1, db.box.y1], atol=0.05)


def test_segmenter_batched_masks_equal_one_at_a_time(batched_models: dict, photos: list[Image.Image]) -> None:
    segmenter: MaskSegmenter = batched_models["segmenter"]
    boxes: list[Sequence[Box]] = [
        [Box(0.1 * p.width, 0.1 * p.height, 0.9 * p.width, 0.9 * p.height), Box(0, 0, p.width / 2, p.height)]
        for p in photos
    ]
    alone = [segmenter.segment(p, b) for p, b in zip(photos, boxes, strict=True)]
    since = len(segmenter._batcher.batch_sizes)
    together = _together(lambda i: segmenter.segment(photos[i], boxes[i]), len(photos))
    assert max(_batched(segmenter._batcher, since)) > 2  # several callers' two crops each in one pass
    for masks_a, masks_b in zip(alone, together, strict=True):
        for a, b in zip(masks_a, masks_b, strict=True):
            assert a.shape == b.shape
            # Logits within float rounding can flip a pixel right at probability 0.5, nothing more.
            assert (a != b).mean() < 1e-3


def test_a_lone_request_does_not_wait_for_a_batch(tmp_path: Path, photos: list[Image.Image]) -> None:
    settings = make_settings(tmp_path, embedder_batching="on", embedder_max_queue_delay_ms=20_000.0)
    embedder = GarmentEmbedder(settings)
    embedder.load()
    start = time.monotonic()
    embedder.embed([photos[0]])
    # Waiting for a fuller batch would take the 20 s delay; a lone request runs at once.
    assert time.monotonic() - start < 10.0
    assert embedder._batcher.batch_sizes[-1] == 1


def _gated(embedder: GarmentEmbedder, policy: BatchPolicy) -> tuple[DynamicBatcher, threading.Event, threading.Event]:
    """A batcher over the real embedder's forward pass that holds each pass until `gate` is set."""
    gate, entered = threading.Event(), threading.Event()

    def run(items: list) -> list:
        entered.set()
        gate.wait(60)
        return embedder._forward_rows(items)

    return DynamicBatcher("embedder", run, policy), gate, entered


def test_a_full_queue_refuses_at_once(batched_models: dict, photos: list[Image.Image]) -> None:
    embedder: GarmentEmbedder = batched_models["embedder"]
    batcher, gate, entered = _gated(embedder, BatchPolicy(max_batch_size=4, max_delay_ms=0, queue_size=2))
    items = list(embedder.backbone.preprocess(photos[:1]))
    first = threading.Thread(target=batcher.submit, args=(items,))
    second = threading.Thread(target=batcher.submit, args=(items,))
    first.start()
    assert entered.wait(30)  # the first request is running
    second.start()  # the second waits: the queue now holds its two requests
    time.sleep(0.2)
    start = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        batcher.submit(items)
    assert time.monotonic() - start < 1.0
    assert refused.value.retry_after_s == 1
    gate.set()
    first.join(30)
    second.join(30)
    assert len(batcher.submit(items)) == 1  # room again once they finished


def test_a_queued_request_past_its_deadline_leaves_the_queue(batched_models: dict, photos: list[Image.Image]) -> None:
    embedder: GarmentEmbedder = batched_models["embedder"]
    batcher, gate, entered = _gated(embedder, BatchPolicy(max_batch_size=1, max_delay_ms=0, queue_size=8))
    items = list(embedder.backbone.preprocess(photos[:1]))
    first = threading.Thread(target=batcher.submit, args=(items,))
    first.start()
    assert entered.wait(30)
    start = time.monotonic()
    with deadline_in(0.3), pytest.raises(DeadlineExceeded):
        batcher.submit(items)
    assert time.monotonic() - start < 5.0
    gate.set()
    first.join(30)
    assert len(batcher.batch_sizes) == 1  # the expired request never ran


def test_batching_off_runs_each_caller_in_its_own_thread(tmp_path: Path, photos: list[Image.Image]) -> None:
    settings = make_settings(tmp_path, embedder_batching="off")
    embedder = GarmentEmbedder(settings)
    embedder.load()
    vectors = _together(lambda i: embedder.embed([photos[i]])[0], 3)
    assert embedder._batcher.batch_sizes == []  # no worker thread, no batches
    assert all(v.shape == (embedder.dim,) for v in vectors)
