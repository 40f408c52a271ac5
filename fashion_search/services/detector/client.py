"""GarmentDetector's interface over gRPC, for a gateway or worker whose detector runs elsewhere."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fashion_search.core.deadlines import call_timeout
from fashion_search.core.domain import Detection
from fashion_search.core.grpc_common import box_from_proto, image_to_proto, make_channel, remote_model_name, rpc_errors
from fashion_search.core.settings import Settings
from fashion_search.rpc import detector_pb2, detector_pb2_grpc

# The proto reads min_score 0 as "service default"; an explicit 0 or below ("keep everything") is sent as
# the smallest positive float32 instead, which keeps the same detections as 0 would in-process.
_EXPLICIT_ZERO = float(np.finfo(np.float32).tiny)


class RemoteDetector:
    """Detector protocol backed by the detector gRPC service."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        self._channel = make_channel(url, settings)
        self._stub = detector_pb2_grpc.DetectorStub(self._channel)
        self._model_name = remote_model_name(self._stub, "detector", settings)

    @property
    def model_name(self) -> str:
        """Model identifier reported by the service (asked again after model_info_ttl_s)."""
        return self._model_name.get()

    def detect(self, image: Image.Image, min_score: float | None = None) -> list[Detection]:
        """Detect remotely; raises ServiceUnavailable if the service is down, InvalidImage on bad input."""
        wire_score = 0.0 if min_score is None else max(min_score, _EXPLICIT_ZERO)
        request = detector_pb2.DetectRequest(image=image_to_proto(image), min_score=wire_score)
        with rpc_errors("detector"):
            resp = self._stub.Detect(request, timeout=call_timeout("detector", self.settings.grpc_timeout_s))
        return [Detection(box_from_proto(d.box), d.category, d.score) for d in resp.detections]

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
