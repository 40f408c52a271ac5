"""Shared gRPC plumbing: channels, servers with health checks, error mapping and message conversion."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

from fashion_search.core.deadlines import call_timeout, deadline_in
from fashion_search.core.domain import Box
from fashion_search.core.images import InvalidImage, decode_image
from fashion_search.core.observability import instrument_channel, server_interceptors, start_metrics_server
from fashion_search.core.settings import Settings
from fashion_search.core.unavailable import DeadlineExceeded, Overloaded, ServiceUnavailable
from fashion_search.rpc import common_pb2

log = logging.getLogger(__name__)

__all__ = ["DeadlineExceeded", "Overloaded", "ServiceUnavailable"]  # re-exported: callers catch them from here
# Trailing metadata of an UNAVAILABLE answer from a full model queue: the seconds a client should wait.
RETRY_AFTER_KEY = "fs-retry-after-s"
# Threads of a model server beyond its queue's size: health checks, Info and refusals never wait behind the queue.
SPARE_WORKERS = 4


T = TypeVar("T")


class Expiring(Generic[T]):
    """A value fetched again once it is older than ttl_s (racing threads may both fetch; either answer is fine)."""

    def __init__(self, fetch: Callable[[], T], ttl_s: float) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._value: tuple[float, T] | None = None

    def get(self) -> T:
        """The value, fetched now if never fetched or stale; a failed fetch raises and keeps nothing."""
        now = time.monotonic()
        if self._value is None or now - self._value[0] > self._ttl_s:
            self._value = (now, self._fetch())
        return self._value[1]


def remote_model_name(stub: Any, service: str, settings: Settings) -> Expiring[str]:
    """A model service's name from its Info RPC (ModelInfoRequest), asked again after model_info_ttl_s."""
    def ask() -> str:
        with rpc_errors(service):
            timeout = call_timeout(service, settings.grpc_timeout_s)
            return str(stub.Info(common_pb2.ModelInfoRequest(), timeout=timeout).model)

    return Expiring(ask, settings.model_info_ttl_s)


class ModelInfoServicer:
    """The Info RPC of a servicer that serves `self.model`: the model's name (weights digest included)."""

    model: Any

    def Info(  # noqa: N802 - the RPC name from the proto
        self, request: common_pb2.ModelInfoRequest, context: grpc.ServicerContext
    ) -> common_pb2.ModelInfoResponse:
        """The served model's name."""
        return common_pb2.ModelInfoResponse(model=self.model.model_name)


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    """Message size limits shared by clients and servers (raw images are a few MB)."""
    return [
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        # Spread calls over every replica behind a DNS name (compose/k8s scale-out), not just the first one.
        ("grpc.lb_policy_name", "round_robin"),
        # A restarted service is reconnected to within this, not after gRPC's default of up to two minutes.
        ("grpc.max_reconnect_backoff_ms", settings.grpc_max_reconnect_backoff_ms),
        ("grpc.initial_reconnect_backoff_ms", min(1000, settings.grpc_max_reconnect_backoff_ms)),
    ]


def make_channel(url: str, settings: Settings) -> grpc.Channel:
    """An insecure channel to host:port (loopback or a private network behind TLS termination)."""
    target = url.removeprefix("grpc://")
    # dns: and ipv4:/ipv6: (a fixed list of replicas, "ipv4:host:port,host:port") go to gRPC as they are.
    if "://" not in target and not target.startswith(("dns:", "ipv4:", "ipv6:")):
        target = f"dns:///{target}"  # the DNS resolver returns every replica's address
    return instrument_channel(grpc.insecure_channel(target, options=channel_options(settings)))


@contextmanager
def rpc_errors(service: str) -> Iterator[None]:
    """Turn gRPC errors into domain errors: bad input stays bad input, outages become ServiceUnavailable."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        retry_after = _retry_after(exc)
        if code == grpc.StatusCode.UNAVAILABLE and retry_after is not None:
            raise Overloaded(service, details or "queue full", retry_after) from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(service, details or "deadline exceeded") from None
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidImage(details or "invalid argument") from None
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise InvalidImage(details or "request too large", 413) from None
        raise ServiceUnavailable(service, f"{code.name if code else 'error'}: {details}") from None


def _retry_after(exc: grpc.RpcError) -> int | None:
    """The retry delay a full model queue sent in its trailing metadata, or None."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == RETRY_AFTER_KEY:
            return int(value)
    return None


def serve_model_call(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
    """Run a model servicer's work within the caller's deadline: bad input is INVALID_ARGUMENT, a full queue
    UNAVAILABLE with the retry delay in trailing metadata, an expired deadline DEADLINE_EXCEEDED."""
    left = context.time_remaining()
    try:
        # Without a client deadline gRPC reports a huge or no remaining time: keep no deadline then.
        with deadline_in(left if left is not None and left < 1e6 else None):
            return abort_on_invalid(context, fn)
    except Overloaded as exc:
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(exc.retry_after_s)),))
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except DeadlineExceeded as exc:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    raise AssertionError("unreachable: context.abort raises")


def abort_on_invalid(context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
    """Run fn; map InvalidImage/ValueError to INVALID_ARGUMENT instead of an internal error."""
    try:
        return fn()
    except InvalidImage as exc:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.status == 413 else grpc.StatusCode.INVALID_ARGUMENT
        context.abort(code, str(exc))
    except ValueError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def image_to_proto(img: Image.Image) -> common_pb2.Image:
    """Raw RGB8 pixels, so the remote side sees exactly these pixels."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return common_pb2.Image(data=rgb.tobytes(), width=rgb.width, height=rgb.height)


def image_from_proto(msg: common_pb2.Image, settings: Settings) -> Image.Image:
    """Decode a proto image: raw pixels when width/height are set, else encoded bytes (validated)."""
    if msg.width > 0 and msg.height > 0:
        if msg.width * msg.height > settings.max_image_pixels:
            raise InvalidImage(f"image is {msg.width}x{msg.height}; too many pixels", 413)
        if len(msg.data) != msg.width * msg.height * 3:
            raise InvalidImage(
                f"raw image has {len(msg.data)} bytes; {msg.width}x{msg.height} RGB needs {msg.width * msg.height * 3}"
            )
        return Image.frombytes("RGB", (msg.width, msg.height), msg.data)
    return decode_image(msg.data, settings)


def box_to_proto(box: Box) -> common_pb2.Box:
    """Domain box to proto."""
    return common_pb2.Box(x0=box.x0, y0=box.y0, x1=box.x1, y1=box.y1)


def box_from_proto(msg: common_pb2.Box) -> Box:
    """Proto box to domain."""
    return Box(msg.x0, msg.y0, msg.x1, msg.y1)


def vector_from_values(values: Any) -> np.ndarray:
    """Repeated float field to a float32 array."""
    return np.asarray(values, dtype=np.float32)


def make_server(
    name: str, port: int, settings: Settings, register: Callable[[grpc.Server], None], workers: int | None = None,
    metrics_port: int | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started gRPC server with the standard health service and telemetry interceptors (workers threads, default
    settings.grpc_workers); port 0 picks a free port. With metrics_port, Prometheus metrics are served there."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers or settings.grpc_workers), options=channel_options(settings),
        interceptors=server_interceptors(),
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{settings.bind_host}:{port}")
    if bound == 0:
        raise RuntimeError(f"{name}: cannot bind {settings.bind_host}:{port}")
    server.start()
    if metrics_port is not None:
        start_metrics_server(metrics_port, settings)
    # NOT_SERVING until the caller has loaded its model; then it flips both names to SERVING.
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    log.info("%s gRPC server listening on %s:%d", name, settings.bind_host, bound)
    return server, bound, health_servicer


def mark_serving(health_servicer: health.HealthServicer, name: str) -> None:
    """Report SERVING for the service and the server as a whole."""
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def start_model_server(
    name: str, port: int, settings: Settings, model: Any, register: Callable[[grpc.Server], None],
    queue_size: int = 0,
    metrics_port: int | None = None,
) -> tuple[grpc.Server, int]:
    """Bind, load the model's weights, then report SERVING: health turns green only once requests can be served.

    Every request the model's queue admits (queue_size) gets a thread to wait in, and a few more threads answer
    health checks and the refusals of a full queue: requests queue in the model's bounded queue, not in gRPC's.
    With metrics_port, this process's Prometheus metrics are served there.
    """
    workers = max(settings.grpc_workers, queue_size + SPARE_WORKERS)
    server, bound, health_servicer = make_server(name, port, settings, register, workers, metrics_port)
    model.load()
    mark_serving(health_servicer, name)
    return server, bound


def check_health(url: str, settings: Settings, timeout_s: float = 2.0) -> bool:
    """True if the server at url answers SERVING to the standard health check."""
    try:
        with make_channel(url, settings) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
