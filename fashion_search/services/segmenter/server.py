"""gRPC adapter over the in-process segmenter chosen by FS_SEGMENTER_MODEL."""

from __future__ import annotations

import math

import grpc
import numpy as np

from fashion_search.core.domain import Box, Segmenter
from fashion_search.core.grpc_common import (
    ModelInfoServicer,
    abort_on_invalid,
    box_from_proto,
    box_to_proto,
    image_from_proto,
    serve_model_call,
    start_model_server,
)
from fashion_search.core.serving import wait_for_termination
from fashion_search.core.settings import Settings
from fashion_search.rpc import common_pb2, segmenter_pb2, segmenter_pb2_grpc

SERVICE_NAME = "fashion_search.v1.Segmenter"


def mask_to_proto(box: common_pb2.Box, mask: np.ndarray) -> segmenter_pb2.Mask:
    """A bool H×W mask as a proto Mask: row-major, one byte (0 or 1) per pixel."""
    height, width = mask.shape
    return segmenter_pb2.Mask(box=box, width=width, height=height, data=mask.astype(np.uint8).tobytes())


def finite_box(msg: common_pb2.Box) -> Box:
    """A proto box as a domain box; ValueError (→ INVALID_ARGUMENT) for NaN or infinite coordinates."""
    box = box_from_proto(msg)
    if not all(math.isfinite(v) for v in (box.x0, box.y0, box.x1, box.y1)):
        raise ValueError(f"box coordinates must be finite: {box}")
    return box


class SegmenterServicer(ModelInfoServicer, segmenter_pb2_grpc.SegmenterServicer):
    """Segment and Info over one in-process segmenter."""

    def __init__(self, model: Segmenter, settings: Settings) -> None:
        self.model = model
        self.settings = settings

    def Segment(
        self, request: segmenter_pb2.SegmentRequest, context: grpc.ServicerContext
    ) -> segmenter_pb2.SegmentResponse:
        """Image + boxes → one box-sized mask per box."""
        image = abort_on_invalid(context, lambda: image_from_proto(request.image, self.settings))
        boxes = abort_on_invalid(context, lambda: [finite_box(b) for b in request.boxes])
        masks = serve_model_call(context, lambda: self.model.segment(image, boxes))
        return segmenter_pb2.SegmentResponse(
            masks=[mask_to_proto(box_to_proto(b), m) for b, m in zip(boxes, masks, strict=True)]
        )


def start_server(
    settings: Settings, port: int | None = None, model: Segmenter | None = None,
    metrics_port: int | None = None,
) -> tuple[grpc.Server, int]:
    """Load the model, start serving on port (0 = any free port) and report SERVING."""
    from fashion_search.services.segmenter.loader import local_segmenter

    model = model or local_segmenter(settings)
    servicer = SegmenterServicer(model, settings)
    return start_model_server(
        SERVICE_NAME, settings.segmenter_port if port is None else port, settings, model,
        lambda s: segmenter_pb2_grpc.add_SegmenterServicer_to_server(servicer, s),
        queue_size=settings.segmenter_queue_size, metrics_port=metrics_port,
    )


def serve(settings: Settings) -> None:
    """Run the segmenter service until SIGTERM/SIGINT."""
    server, _ = start_server(settings, metrics_port=settings.segmenter_metrics_port)
    wait_for_termination(server)
