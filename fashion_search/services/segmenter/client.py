"""The Segmenter interface over gRPC, for a gateway or worker whose segmenter runs elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fashion_search.core.deadlines import call_timeout
from fashion_search.core.domain import Box
from fashion_search.core.grpc_common import (
    ServiceUnavailable,
    box_to_proto,
    image_to_proto,
    make_channel,
    remote_model_name,
    rpc_errors,
)
from fashion_search.core.settings import Settings
from fashion_search.rpc import segmenter_pb2, segmenter_pb2_grpc


def mask_from_proto(msg: segmenter_pb2.Mask) -> np.ndarray:
    """A proto Mask as a bool height×width array."""
    if len(msg.data) != msg.width * msg.height:
        raise ServiceUnavailable("segmenter", f"mask has {len(msg.data)} bytes for {msg.width}x{msg.height}")
    return np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width).astype(bool)


class RemoteSegmenter:
    """Segmenter protocol backed by the segmenter gRPC service."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        self._channel = make_channel(url, settings)
        self._stub = segmenter_pb2_grpc.SegmenterStub(self._channel)
        self._model_name = remote_model_name(self._stub, "segmenter", settings)

    @property
    def model_name(self) -> str:
        """Model identifier reported by the service (asked again after model_info_ttl_s)."""
        return self._model_name.get()

    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> list[np.ndarray]:
        """Segment remotely; raises ServiceUnavailable if the service is down, InvalidImage on bad input."""
        if not boxes:
            return []
        request = segmenter_pb2.SegmentRequest(
            image=image_to_proto(image), boxes=[box_to_proto(b) for b in boxes]
        )
        with rpc_errors("segmenter"):
            resp = self._stub.Segment(request, timeout=call_timeout("segmenter", self.settings.grpc_timeout_s))
        if len(resp.masks) != len(boxes):
            raise ServiceUnavailable("segmenter", f"{len(resp.masks)} masks for {len(boxes)} boxes")
        return [mask_from_proto(m) for m in resp.masks]

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
