"""gRPC adapter over GarmentDetector."""

from __future__ import annotations

import grpc

from fashion_search.core.domain import Detector
from fashion_search.core.grpc_common import (
    ModelInfoServicer,
    abort_on_invalid,
    box_to_proto,
    image_from_proto,
    serve_model_call,
    start_model_server,
)
from fashion_search.core.serving import wait_for_termination
from fashion_search.core.settings import Settings
from fashion_search.rpc import detector_pb2, detector_pb2_grpc

SERVICE_NAME = "fashion_search.v1.Detector"


class DetectorServicer(ModelInfoServicer, detector_pb2_grpc.DetectorServicer):
    """Detect and Info over one in-process detector."""

    def __init__(self, model: Detector, settings: Settings) -> None:
        self.model = model
        self.settings = settings

    def Detect(
        self, request: detector_pb2.DetectRequest, context: grpc.ServicerContext
    ) -> detector_pb2.DetectResponse:
        """Image → garments (box, category, score), best first."""
        image = abort_on_invalid(context, lambda: image_from_proto(request.image, self.settings))
        # proto3 cannot tell 0 from unset: 0 means "the service default", as the proto documents.
        min_score = request.min_score if request.min_score > 0 else None
        found = serve_model_call(context, lambda: self.model.detect(image, min_score))
        return detector_pb2.DetectResponse(
            detections=[
                detector_pb2.Detection(box=box_to_proto(d.box), category=d.category, score=d.score)
                for d in found
            ],
            width=image.width, height=image.height,
        )


def start_server(
    settings: Settings, port: int | None = None, model: Detector | None = None,
    metrics_port: int | None = None,
) -> tuple[grpc.Server, int]:
    """Load the model, start serving on port (0 = any free port) and report SERVING."""
    if model is None:
        from fashion_search.services.detector.loader import local_detector

        model = local_detector(settings)
    servicer = DetectorServicer(model, settings)
    return start_model_server(
        SERVICE_NAME, settings.detector_port if port is None else port, settings, model,
        lambda s: detector_pb2_grpc.add_DetectorServicer_to_server(servicer, s),
        queue_size=settings.detector_queue_size, metrics_port=metrics_port,
    )


def serve(settings: Settings) -> None:
    """Run the detector service until SIGTERM/SIGINT."""
    server, _ = start_server(settings, metrics_port=settings.detector_metrics_port)
    wait_for_termination(server)
