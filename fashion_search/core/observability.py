"""Every process's telemetry: JSON logs (structlog) carrying a request id, Prometheus metrics on a port of its own,
gRPC interceptors (metrics, request id, OpenTelemetry) and OpenTelemetry traces sent over OTLP when configured."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from fashion_search.core.settings import Settings

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# What a caller may send as a request id: it goes into every log line, so nothing that could forge one.
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GRPC_REQUESTS = Counter(
    "fs_grpc_server_requests_total", "gRPC requests handled, by final status code", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "fs_grpc_server_latency_seconds", "gRPC handling time per method", ["service", "method"], buckets=LATENCY_BUCKETS
)
GRPC_IN_FLIGHT = Gauge("fs_grpc_server_in_flight", "gRPC requests being handled now", ["service", "method"])
BATCH_SIZE = Histogram(
    "fs_model_batch_size", "Items per model forward pass (images or boxes), by model", ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


# ---- request ids and logs ------------------------------------------------------------------------------------------
def accept_request_id(candidate: str | None) -> str:
    """The caller's request id when it is well-formed, else a new one."""
    if candidate and _REQUEST_ID_OK.match(candidate):
        return candidate
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The request id bound to this context (a gateway request or a gRPC call), if any."""
    return structlog.contextvars.get_contextvars().get("request_id")


def bind_request_id(request_id: str) -> Callable[[], None]:
    """Bind the id for every log line of this context; returns the call that unbinds it."""
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    return lambda: structlog.contextvars.reset_contextvars(**tokens)


def configure_logging(settings: Settings, process: str) -> None:
    """One line per event on stderr: JSON (or console) with time, level, logger, process and bound request id;
    the standard library's loggers (ours, uvicorn's, Celery's, grpc's) go through the same formatter."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        lambda _logger, _name, event: {**event, "process": process},
    ]
    renderer = (
        structlog.processors.JSONRenderer() if settings.log_format == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)


# ---- metrics -------------------------------------------------------------------------------------------------------
def start_metrics_server(port: int, settings: Settings) -> None:
    """Serve this process's Prometheus registry at http://bind_host:port/metrics (a daemon thread)."""
    start_http_server(port, addr=settings.bind_host)
    log.info("metrics on http://%s:%d/metrics", settings.bind_host, port)


# ---- gRPC ----------------------------------------------------------------------------------------------------------
def _split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").partition("/")
    return service, method


class ServerTelemetry(grpc.ServerInterceptor):
    """Per unary RPC: request id from the metadata bound to the handler's logs, counts by status code, latency,
    in-flight; one log line per RPC (health checks excepted: probes would drown the rest)."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        service, method = _split_method(details.method)
        metadata = dict(details.invocation_metadata or ())
        inner = handler.unary_unary
        quiet = service.startswith("grpc.health")
        rpc_log = structlog.get_logger("fashion_search.rpc")

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            unbind = bind_request_id(accept_request_id(metadata.get(REQUEST_ID_HEADER)))
            in_flight = GRPC_IN_FLIGHT.labels(service, method)
            in_flight.inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                response = inner(request, context)
                code = _code(context) or code
                return response
            except BaseException:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                elapsed = time.perf_counter() - start
                in_flight.dec()
                GRPC_REQUESTS.labels(service, method, code.name).inc()
                GRPC_LATENCY.labels(service, method).observe(elapsed)
                if not quiet:
                    rpc_log.info("rpc", service=service, method=method, code=code.name,
                                 duration_ms=round(elapsed * 1000, 2))
                unbind()

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status the handler set (abort or set_code), if any."""
    getter = getattr(context, "code", None)
    code = getter() if callable(getter) else None
    return code if isinstance(code, grpc.StatusCode) else None


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class RequestIdClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Send the current request id (if any) as `x-request-id` metadata, so the service logs it too."""

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        request_id = current_request_id()
        if request_id:
            metadata = [*(details.metadata or ()), (REQUEST_ID_HEADER, request_id)]
            details = _ClientCallDetails(details, metadata)
        return continuation(details, request)


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """The interceptors every gRPC server runs: OpenTelemetry's standard one, then ours."""
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor(), ServerTelemetry()]


def instrument_channel(channel: grpc.Channel) -> grpc.Channel:
    """A channel that propagates the trace context (OpenTelemetry's client interceptor) and the request id."""
    from opentelemetry.instrumentation.grpc import client_interceptor, grpcext

    # OpenTelemetry's interceptor is of its own grpcext kind, so it wraps the channel through grpcext.
    traced = grpcext.intercept_channel(channel, client_interceptor())
    return grpc.intercept_channel(traced, RequestIdClientInterceptor())


# ---- traces --------------------------------------------------------------------------------------------------------
def setup_tracing(settings: Settings, process: str, exporter: Any = None) -> bool:
    """Install an SDK tracer provider exporting over OTLP/HTTP when FS_OTEL_EXPORTER_OTLP_ENDPOINT is set (or to
    the given exporter); otherwise the API's no-op provider stays and spans cost nothing. True if installed."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint and exporter is None:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"fashion-search-{process}"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    log.info("traces exported to %s", endpoint or type(exporter).__name__)
    return True
