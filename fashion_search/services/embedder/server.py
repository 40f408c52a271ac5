"""gRPC adapter over GarmentEmbedder."""

from __future__ import annotations

import grpc

from fashion_search.core.grpc_common import image_from_proto, serve_model_call, start_model_server
from fashion_search.core.serving import wait_for_termination
from fashion_search.core.settings import Settings
from fashion_search.rpc import embedder_pb2, embedder_pb2_grpc
from fashion_search.services.embedder.model import GarmentEmbedder

SERVICE_NAME = "fashion_search.v1.Embedder"


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    """Embed / EmbedBatch / Info over one in-process GarmentEmbedder."""

    def __init__(self, model: GarmentEmbedder, settings: Settings) -> None:
        self.model = model
        self.settings = settings

    def Embed(self, request: embedder_pb2.EmbedRequest, context: grpc.ServicerContext) -> embedder_pb2.EmbedResponse:
        """One image → one vector."""
        vec = serve_model_call(
            context, lambda: self.model.embed([image_from_proto(request.image, self.settings)])[0]
        )
        return embedder_pb2.EmbedResponse(vector=embedder_pb2.Vector(values=vec.tolist()), model=self.model.model_name)

    def EmbedBatch(
        self, request: embedder_pb2.EmbedBatchRequest, context: grpc.ServicerContext
    ) -> embedder_pb2.EmbedBatchResponse:
        """Many images → many vectors, one forward pass."""
        vecs = serve_model_call(
            context, lambda: self.model.embed([image_from_proto(i, self.settings) for i in request.images])
        )
        return embedder_pb2.EmbedBatchResponse(
            vectors=[embedder_pb2.Vector(values=v.tolist()) for v in vecs], model=self.model.model_name
        )

    def Info(self, request: embedder_pb2.InfoRequest, context: grpc.ServicerContext) -> embedder_pb2.InfoResponse:
        """Model name and vector dimension."""
        return embedder_pb2.InfoResponse(model=self.model.model_name, dim=self.model.dim)


def start_server(
    settings: Settings, port: int | None = None, model: GarmentEmbedder | None = None,
    metrics_port: int | None = None,
) -> tuple[grpc.Server, int]:
    """Load the model, start serving on port (0 = any free port) and report SERVING."""
    model = model or GarmentEmbedder(settings)
    servicer = EmbedderServicer(model, settings)
    return start_model_server(
        SERVICE_NAME, settings.embedder_port if port is None else port, settings, model,
        lambda s: embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, s),
        queue_size=settings.embedder_queue_size, metrics_port=metrics_port,
    )


def serve(settings: Settings) -> None:
    """Run the embedder service until SIGTERM/SIGINT."""
    server, _ = start_server(settings, metrics_port=settings.embedder_metrics_port)
    wait_for_termination(server)
