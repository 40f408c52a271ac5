"""GarmentEmbedder's interface over gRPC, for a gateway or worker whose embedder runs elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fashion_search.core.deadlines import call_timeout
from fashion_search.core.grpc_common import Expiring, image_to_proto, make_channel, rpc_errors, vector_from_values
from fashion_search.core.settings import Settings
from fashion_search.rpc import embedder_pb2, embedder_pb2_grpc


class RemoteEmbedder:
    """Embedder protocol backed by the embedder gRPC service."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        self._channel = make_channel(url, settings)
        self._stub = embedder_pb2_grpc.EmbedderStub(self._channel)
        self._info = Expiring(self._ask_info, settings.model_info_ttl_s)

    def _ask_info(self) -> embedder_pb2.InfoResponse:
        with rpc_errors("embedder"):
            timeout = call_timeout("embedder", self.settings.grpc_timeout_s)
            return self._stub.Info(embedder_pb2.InfoRequest(), timeout=timeout)

    @property
    def dim(self) -> int:
        """Vector dimension reported by the service."""
        return self._info.get().dim

    @property
    def model_name(self) -> str:
        """Model identifier reported by the service (asked again after model_info_ttl_s)."""
        return self._info.get().model

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed a batch remotely; raises ServiceUnavailable if the service is down."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        request = embedder_pb2.EmbedBatchRequest(images=[image_to_proto(img) for img in images])
        with rpc_errors("embedder"):
            resp = self._stub.EmbedBatch(request, timeout=call_timeout("embedder", self.settings.grpc_timeout_s))
        return np.stack([vector_from_values(v.values) for v in resp.vectors])

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
