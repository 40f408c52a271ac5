"""Detector and segmenter gRPC services on loopback: same results as in-process, clean error mapping."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from fashion_search.core.domain import Box, Detector, Segmenter
from fashion_search.core.grpc_common import Expiring, ServiceUnavailable, check_health
from fashion_search.core.images import InvalidImage
from fashion_search.core.settings import Settings
from fashion_search.rpc import common_pb2, detector_pb2, detector_pb2_grpc, segmenter_pb2, segmenter_pb2_grpc
from fashion_search.services.detector import server as detector_server
from fashion_search.services.detector.client import RemoteDetector
from fashion_search.services.segmenter import server as segmenter_server
from fashion_search.services.segmenter.client import RemoteSegmenter
from fashion_search.services.segmenter.model import GarmentSegmenter

DATA = Path("/work/shared/data/clothing-small")
# A closed port must fail fast: well within this, with a 2 s RPC timeout.
OUTAGE_LIMIT_S = 5.0


def sample_images() -> list[Image.Image]:
    """Two real product photos when the data set is present, plus a synthetic garment on white."""
    synthetic = Image.new("RGB", (240, 320), (250, 250, 250))
    synthetic.paste((20, 90, 160), (50, 60, 190, 280))
    photos = [sorted((DATA / "validation" / c).glob("*.jpg"))[:1] for c in ("dress", "shoes")]
    return [Image.open(p[0]).convert("RGB") for p in photos if p] + [synthetic]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # A low pixel limit lets the oversized-image test stay small (the photos here are ~0.2 Mpx).
    return Settings(data_dir=tmp_path_factory.mktemp("services"), grpc_timeout_s=30.0, detector_url="",
                    segmenter_url="", max_image_pixels=1_000_000)


@pytest.fixture(scope="module")
def local_segmenter(settings: Settings) -> GarmentSegmenter:
    return GarmentSegmenter(settings)


@pytest.fixture(scope="module")
def detector_url(settings: Settings, shared_models: dict) -> Iterator[str]:
    server, port = detector_server.start_server(settings, port=0, model=shared_models["detector"])
    yield f"{settings.bind_host}:{port}"
    server.stop(None).wait()


@pytest.fixture(scope="module")
def segmenter_url(settings: Settings, local_segmenter: GarmentSegmenter) -> Iterator[str]:
    server, port = segmenter_server.start_server(settings, port=0, model=local_segmenter)
    yield f"{settings.bind_host}:{port}"
    server.stop(None).wait()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_same_detections(got: list, expected: list) -> None:
    # Two processes may run torch with different thread counts: sums reorder, last float bits differ.
    assert [d.category for d in got] == [d.category for d in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)
        assert a.box.to_list() == pytest.approx(b.box.to_list(), abs=0.11)


def test_remote_detector_matches_in_process(detector_url: str, settings: Settings, shared_models: dict) -> None:
    assert check_health(detector_url, settings)
    local = shared_models["detector"]
    remote = RemoteDetector(detector_url, settings)
    assert isinstance(remote, Detector)
    try:
        assert remote.model_name == local.model_name and "." in local.model_name  # name.weights-digest
        for image in sample_images():
            for min_score in (None, 0.0, 0.5):
                _assert_same_detections(remote.detect(image, min_score), local.detect(image, min_score))
    finally:
        remote.close()


def test_remote_segmenter_matches_in_process(
    segmenter_url: str, settings: Settings, local_segmenter: GarmentSegmenter, shared_models: dict
) -> None:
    assert check_health(segmenter_url, settings)
    remote = RemoteSegmenter(segmenter_url, settings)
    assert isinstance(remote, Segmenter)
    try:
        assert remote.model_name == local_segmenter.model_name
        for image in sample_images():
            boxes = [d.box for d in shared_models["detector"].detect(image, 0.0)]
            boxes += [Box(0, 0, image.width, image.height), Box(10, 10, 13, 12)]
            local_masks = local_segmenter.segment(image, boxes)
            remote_masks = remote.segment(image, boxes)
            assert len(remote_masks) == len(boxes)
            for a, b in zip(local_masks, remote_masks, strict=True):
                assert a.dtype == b.dtype == np.bool_
                assert np.array_equal(a, b)
        assert remote.segment(sample_images()[-1], []) == []
    finally:
        remote.close()


@pytest.mark.parametrize("client_cls", [RemoteDetector, RemoteSegmenter])
def test_closed_port_raises_service_unavailable_quickly(client_cls: type) -> None:
    client = client_cls(f"127.0.0.1:{closed_port()}", Settings(grpc_timeout_s=2))
    image = Image.new("RGB", (32, 32), "white")
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        if isinstance(client, RemoteDetector):
            client.detect(image)
        else:
            client.segment(image, [Box(0, 0, 16, 16)])
    with pytest.raises(ServiceUnavailable):
        client.model_name  # noqa: B018 - the property asks the service
    assert time.monotonic() - start < 2 * OUTAGE_LIMIT_S
    client.close()


def test_garbage_image_is_invalid_argument(detector_url: str, segmenter_url: str, settings: Settings) -> None:
    garbage = common_pb2.Image(data=b"definitely not a jpeg")
    short_raw = common_pb2.Image(data=b"\x00" * 10, width=4, height=4)  # 4×4 RGB needs 48 bytes
    with grpc.insecure_channel(detector_url) as channel:
        stub = detector_pb2_grpc.DetectorStub(channel)
        for image in (garbage, short_raw):
            with pytest.raises(grpc.RpcError) as err:
                stub.Detect(detector_pb2.DetectRequest(image=image), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(segmenter_url) as channel:
        seg_stub = segmenter_pb2_grpc.SegmenterStub(channel)
        for image in (garbage, short_raw):
            with pytest.raises(grpc.RpcError) as err:
                seg_stub.Segment(segmenter_pb2.SegmentRequest(image=image, boxes=[common_pb2.Box(x1=2, y1=2)]),
                                 timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        white = common_pb2.Image(data=b"\xff" * 48, width=4, height=4)
        with pytest.raises(grpc.RpcError) as err:
            seg_stub.Segment(segmenter_pb2.SegmentRequest(image=white, boxes=[common_pb2.Box(x1=float("nan"), y1=2)]),
                             timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_image_through_the_client_is_invalid_image(detector_url: str, settings: Settings) -> None:
    remote = RemoteDetector(detector_url, settings)
    side = int(np.sqrt(settings.max_image_pixels)) + 1
    try:
        with pytest.raises(InvalidImage) as err:
            remote.detect(Image.new("RGB", (side, side), "white"))
        assert err.value.status == 413  # refused as too large, not reported as an outage
    finally:
        remote.close()


def test_expiring_value_is_asked_again_once_stale_and_not_kept_after_a_failure() -> None:
    answers = iter(["model-a", "model-b"])
    calls = []

    def fetch() -> str:
        calls.append(1)
        answer = next(answers, None)
        if answer is None:
            raise ServiceUnavailable("detector", "down")
        return answer

    fresh = Expiring(fetch, ttl_s=3600)
    assert (fresh.get(), fresh.get(), len(calls)) == ("model-a", "model-a", 1)
    stale = Expiring(fetch, ttl_s=-1)  # always stale: every read asks
    assert stale.get() == "model-b"
    with pytest.raises(ServiceUnavailable):
        stale.get()
