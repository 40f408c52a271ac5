"""Telemetry over a real gRPC hop (the search service in-process on loopback): trace context, request id, metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from fashion_search.core.domain import IMAGE_VECTOR
from fashion_search.core.observability import accept_request_id, bind_request_id, configure_logging, setup_tracing
from fashion_search.services.search.client import RemoteIndex
from fashion_search.services.search.factory import make_index
from fashion_search.services.search.server import start_server
from tests.conftest import make_settings


def _count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "fs_grpc_server_requests_total", {"service": "fashion_search.v1.Search", "method": method, "code": code}
    )
    return value or 0.0


def test_tracing_is_off_without_an_endpoint(tmp_path: Path) -> None:
    assert setup_tracing(make_settings(tmp_path), "test") is False


def test_request_ids_from_callers_are_checked() -> None:
    assert accept_request_id("abc-123.x:y") == "abc-123.x:y"
    for bad in (None, "", "two words", "x" * 129, 'a"b', "line\nbreak"):
        made = accept_request_id(bad)
        assert made != bad and len(made) == 32


def test_trace_request_id_and_metrics_cross_a_grpc_hop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    exporter = InMemorySpanExporter()
    assert setup_tracing(settings, "test", exporter=exporter)
    index = make_index(settings, 8)
    server, port = start_server(settings, port=0, index=index)
    remote = RemoteIndex(f"127.0.0.1:{port}", settings)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(settings, "test")
    try:
        ok_before, bad_before = _count("Search", "OK"), _count("Search", "INVALID_ARGUMENT")
        unbind = bind_request_id("req-trace-1")
        with trace.get_tracer("test").start_as_current_span("gateway-request") as parent:
            remote.search(np.ones(8, np.float32), 3, IMAGE_VECTOR)
            with pytest.raises(ValueError):
                remote.search(np.ones(5, np.float32), 3, IMAGE_VECTOR)  # wrong dimension: INVALID_ARGUMENT
        unbind()
        assert _count("Search", "OK") == ok_before + 1
        assert _count("Search", "INVALID_ARGUMENT") == bad_before + 1
        spans = exporter.get_finished_spans()
        trace_id = parent.get_span_context().trace_id
        kinds = {s.kind for s in spans if s.context.trace_id == trace_id and "Search" in s.name}
        # The client span (ours) and the server span (the service's) share the caller's trace.
        assert kinds >= {trace.SpanKind.CLIENT, trace.SpanKind.SERVER}, [(s.name, s.kind) for s in spans]
        logging.getLogger().handlers[0].flush()
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        rpcs = [r for r in lines if r.get("event") == "rpc" and r.get("request_id") == "req-trace-1"]
        assert [r["code"] for r in rpcs] == ["OK", "INVALID_ARGUMENT"], lines
        assert all(r["process"] == "test" and r["method"] == "Search" for r in rpcs)
    finally:
        structlog.reset_defaults()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        remote.close()
        server.stop(0)
        index.close()
