"""The distributed topology as real processes on loopback: four gRPC services, the gateway, a Celery worker.

A catalog is ingested through the queue (Redis broker) and the gateway's answers must equal the embedded mode's;
then it is reindexed through the queue.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import Ingestor, scroll_pages
from fashion_search.pipeline.search_pipeline import SearchPipeline
from fashion_search.services.search.client import RemoteIndex
from fashion_search.services.search.factory import make_index
from tests.conftest import TEST_REDIS, image_model, make_settings

pytestmark = pytest.mark.integration

REDIS = TEST_REDIS
# Separate Redis databases so a developer's own queue and cache are left alone.
BROKER_DB, RESULT_DB, CACHE_DB = 11, 12, 13
START_TIMEOUT_S = 180.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fashion_search.cli", *args]


def _wait(check: object, what: str, procs: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {START_TIMEOUT_S}s")


def _setting(service: str) -> str:
    """A service's name in FS_* variables: image-embedder -> IMAGE_EMBEDDER."""
    return service.replace("-", "_").upper()


class OtlpCollector:
    """A stand-in OpenTelemetry collector on loopback: takes OTLP/HTTP trace exports and keeps their spans."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[tuple[str, str, str]] = []  # (service.name, trace id hex, span name)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        collector.spans.extend(
                            (attrs.get("service.name", ""), span.trace_id.hex(), span.name) for span in scope.spans
                        )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    if not _redis_up():
        pytest.fail(f"Redis must run at {REDIS} for the integration test (CI starts it)")
    for db in (BROKER_DB, RESULT_DB, CACHE_DB):
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    tmp = tmp_path_factory.mktemp("topology")
    collector = OtlpCollector()
    services = ("detector", "segmenter", "embedder", "image-embedder", "search")
    ports = {name: _free_port() for name in (*services, "gateway")}
    metrics_ports = {name: _free_port() for name in (*services, "gateway", "worker")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
    env.update({
        "FS_DATA_DIR": str(tmp / "data"), "FS_BIND_HOST": "127.0.0.1", "FS_INDEX_BACKEND": "edge",
        "FS_BROKER_URL": f"{REDIS}/{BROKER_DB}", "FS_RESULT_BACKEND": f"{REDIS}/{RESULT_DB}",
        "FS_REDIS_URL": f"{REDIS}/{CACHE_DB}", "FS_TORCH_THREADS": "1", "FS_LOG_LEVEL": "INFO",
        "FS_IMAGE_EMBEDDER_MODEL": image_model(),
        **{f"FS_{_setting(name)}_PORT": str(port) for name, port in ports.items()},
        **{f"FS_{_setting(name)}_METRICS_PORT": str(port) for name, port in metrics_ports.items()},
        "FS_OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "FS_FETCH_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    })
    clients = {f"FS_{_setting(n)}_URL": f"127.0.0.1:{ports[n]}" for n in services}
    procs: dict[str, subprocess.Popen] = {}
    logs = tmp / "logs"
    logs.mkdir()
    try:
        for name in services:
            procs[name] = subprocess.Popen(
                _cli("serve", name), env=env, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT
            )
        for name in services:
            url = f"grpc://127.0.0.1:{ports[name]}"
            _wait(lambda url=url: subprocess.run(_cli("healthcheck", url), env=env).returncode == 0, name, procs)
        client_env = {**env, **clients}
        for name, args in (("gateway", ("serve", "gateway")), ("worker", ("serve", "worker"))):
            procs[name] = subprocess.Popen(
                _cli(*args), env=client_env, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT
            )
        base = f"http://127.0.0.1:{ports['gateway']}"

        def gateway_ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(gateway_ready, "gateway", procs)
        yield {
            "env": client_env, "base": base, "tmp": tmp, "procs": procs, "logs": logs, "metrics": metrics_ports,
            "ports": ports, "collector": collector,
        }
    finally:
        for proc in procs.values():
            proc.terminate()
        for name, proc in procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.returncode not in (0, -15):
                print(f"--- {name} log ---\n{(logs / f'{name}.log').read_text()[-3000:]}")
        collector.close()  # last: the processes flush their spans as they stop


def test_queue_ingest_and_remote_search_match_embedded_mode(
    topology: dict, small_records: list[CatalogRecord], shared_models: dict, tmp_path: Path
) -> None:
    records = small_records[::2]  # two per class keeps the worker's CPU time small
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(
        json.dumps({"product_id": r.product_id, "image": r.image_path, "title": r.title, "category": r.category,
                    "price": r.price}) + "\n"
        for r in records
    ))
    done = subprocess.run(
        _cli("ingest", str(catalog), "--wait"), env=topology["env"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"indexed {len(records)} products" in done.stdout

    base = topology["base"]
    stats = httpx.get(f"{base}/v1/stats", timeout=10).json()
    assert stats["count"] == len(records)
    settings = make_settings(tmp_path / "embedded")
    embedder = shared_models["embedder"]
    embedded = SearchPipeline(
        settings, shared_models["detector"], shared_models["segmenter"], embedder, make_index(settings, embedder.dim),
        shared_models["image_embedder"],
    )
    # The worker's remote embedders named the vectors, through the search service, as the gateway's queries see it.
    assert embedded.separate_image_embedder
    assert stats["embedders"] == {embedded.vectors_model(): len(records)}
    assert stats["stale_index"] is None

    Ingestor(embedded, settings).ingest_payloads(
        [r.to_dict() for r in records], [Path(r.image_path).read_bytes() for r in records]
    )
    from fashion_search.core.images import decode_image

    for rec in (records[1], records[8]):
        data = Path(rec.image_path).read_bytes()
        for mode in ("simple", "fine"):
            resp = httpx.post(
                f"{base}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                data={"mode": mode, "top_k": "5"}, timeout=60,
            )
            assert resp.status_code == 200, resp.text
            remote = resp.json()
            assert remote["degraded"] is None
            local = embedded.search(decode_image(data, settings), mode, 5)
            assert [r["product_id"] for r in remote["results"]] == [h.product.product_id for h in local.hits]
            for r, h in zip(remote["results"], local.hits, strict=True):
                assert abs(r["score"] - h.score) < 1e-3
    embedded.index.close()

    # The stored product image is served by the gateway from the shared data dir.
    img = httpx.get(f"{base}/v1/products/{records[0].product_id}/image", timeout=10)
    assert img.status_code == 200 and img.content == Path(records[0].image_path).read_bytes()


def test_queue_reindex_keeps_products_and_reports_unreadable_images(topology: dict, tmp_path: Path) -> None:
    """Runs after the queue ingest above: a real worker recomputes every product from its stored image."""
    env = topology["env"]
    remote = RemoteIndex(env["FS_SEARCH_URL"], make_settings(tmp_path))
    try:
        before = remote.stats()
        assert before.count > 0, "the queue ingest test must run first"
        products = [p for page in scroll_pages(remote, 100) for p in page]
        assert len(products) == before.count
        broken = products[0]
        Path(broken.image_ref).write_bytes(b"not an image any more")
        done = subprocess.run(
            _cli("reindex", "--queue", "--wait"), env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        batch = int(Settings.model_fields["ingest_batch_size"].default)
        assert f"queued {-(-before.count // batch)} reindex tasks for {before.count} products" in done.stdout
        assert f"reindexed {before.count - 1} products; 1 refused" in done.stdout
        assert f"{broken.product_id}: not an image" in done.stdout
        after = remote.stats()
        assert after.count == before.count and after.version > before.version
        # Payloads (and boxes: the models did not change) are as they were; nothing was dropped.
        assert [p for page in scroll_pages(remote, 100) for p in page] == products
    finally:
        remote.close()


def test_bad_input_through_the_services_is_a_4xx(topology: dict) -> None:
    base = topology["base"]
    resp = httpx.post(f"{base}/v1/search", files={"image": ("x.jpg", b"garbage", "image/jpeg")}, timeout=30)
    assert resp.status_code == 400 and "not an image" in resp.json()["detail"]


def _metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples (with these labels) on the /metrics page of a process."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _logged(logs: Path, process: str, request_id: str) -> list[dict]:
    """The JSON log lines of a process that carry this request id."""
    lines = []
    for line in (logs / f"{process}.log").read_text().splitlines():
        if request_id in line and line.startswith("{"):
            record = json.loads(line)
            if record.get("request_id") == request_id:
                lines.append(record)
    return lines


def test_a_request_id_and_its_count_reach_every_service_it_passed(topology: dict, small_records: list) -> None:
    """A search per mode with its own X-Request-ID: the gateway and each service on the mode's path log that id (one
    JSON line per RPC) and count the call on their own /metrics port; the worker exports its tasks and queue."""
    base, logs, ports = topology["base"], topology["logs"], topology["metrics"]
    paths = {  # the RPC each mode makes, per service (the remote embedder sends even one image as EmbedBatch; fine
        # mode searches every garment in one SearchBatch). Simple mode detects to mix the kinds of a photo of several
        # garments (FS_MIX_MIN_KINDS); fine mode embeds the whole photo too, its neighbours are evidence of the kind.
        "simple": {"detector": "Detect", "image-embedder": "EmbedBatch", "search": "Search"},
        "fine": {
            "detector": "Detect", "segmenter": "Segment", "embedder": "EmbedBatch", "image-embedder": "EmbedBatch",
            "search": "SearchBatch",
        },
    }
    data = Path(small_records[3].image_path).read_bytes()
    traces: dict[str, tuple[str, set[str]]] = {}
    for mode, path in paths.items():
        request_id = f"it-{mode}-{uuid.uuid4().hex[:12]}"
        trace_id = uuid.uuid4().hex  # the caller's W3C trace: the gateway continues it
        before = {svc: _metric(ports[svc], "fs_grpc_server_requests_total", method=m, code="OK")
                  for svc, m in path.items()}
        resp = httpx.post(  # top_k 7 is used nowhere else: the answer cannot come from the cache
            f"{base}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"mode": mode, "top_k": "7"},
            headers={"X-Request-ID": request_id, "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
            timeout=60,
        )
        assert resp.status_code == 200 and resp.json()["degraded"] is None, resp.text
        traces[mode] = (trace_id, set(path))
        assert resp.headers["X-Request-ID"] == request_id
        time.sleep(0.5)  # log lines are flushed per line; give the services' handlers a moment to finish writing
        gateway_lines = _logged(logs, "gateway", request_id)
        assert any(r["event"] == "http" and r["route"] == "/v1/search" and r["status"] == 200 for r in gateway_lines)
        for svc, method in path.items():
            rpcs = [r for r in _logged(logs, svc, request_id) if r["event"] == "rpc"]
            assert rpcs and {r["method"] for r in rpcs} >= {method}, (svc, mode)
            assert all(r["code"] == "OK" and r["process"] == svc for r in rpcs), rpcs
            after = _metric(ports[svc], "fs_grpc_server_requests_total", method=method, code="OK")
            assert after >= before[svc] + 1, (svc, method, before[svc], after)
            assert _metric(ports[svc], "fs_grpc_server_latency_seconds_count", method=method) >= after
        for svc in {"detector", "segmenter", "embedder", "image-embedder", "search"} - set(path):
            assert not _logged(logs, svc, request_id), f"{svc} was not on the {mode} path"
        assert _metric(ports["gateway"], "fs_http_requests_total", route="/v1/search", mode=mode, status="200") >= 1
    # One trace per request, gateway → each service on the path (spans are exported in batches every 5 s).
    collector = topology["collector"]
    for mode, (trace_id, passed) in traces.items():
        expected = {"fashion-search-gateway", *(f"fashion-search-{svc}" for svc in passed)}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = {svc for svc, tid, _ in list(collector.spans) if tid == trace_id}
            if found >= expected:
                break
            time.sleep(0.5)
        assert found == expected, (mode, found, expected)
    assert _metric(ports["search"], "fs_search_points") > 0
    assert _metric(ports["search"], "fs_search_query_seconds_count") >= 2
    # The queue ingest and reindex above ran on the worker: its tasks are counted and its queue is drained.
    assert _metric(ports["worker"], "fs_worker_tasks_total", task="fashion_search.ingest_batch", state="SUCCESS") >= 1
    assert _metric(ports["worker"], "fs_worker_queue_depth", queue="celery") == 0


def test_an_ingest_job_logs_under_the_request_id_that_sent_it(topology: dict, small_records: list) -> None:
    """POST /v1/ingest with an X-Request-ID: the worker's task logs that id, and so do the model services it calls."""
    base, logs = topology["base"], topology["logs"]
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    photo = Path(small_records[5].image_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(photo.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/{photo.name}"  # the topology allows fetches from 127.0.0.1
    line = json.dumps({"product_id": "rid-1", "image_url": url, "title": "t", "category": "dress", "price": 1.0})
    request_id = f"it-ingest-{uuid.uuid4().hex[:12]}"
    try:
        resp = httpx.post(f"{base}/v1/ingest", files={"catalog": ("c.jsonl", line + "\n", "application/jsonl")},
                          headers={"X-Request-ID": request_id}, timeout=30)
        assert resp.status_code == 202, resp.text
        job_url = f"{base}/v1/jobs/{resp.json()['job_id']}"
        deadline = time.monotonic() + 300
        while (job := httpx.get(job_url, timeout=10).json())["remaining"] and time.monotonic() < deadline:
            time.sleep(1.0)
    finally:
        httpd.shutdown()
    assert job["indexed"] == 1, job
    time.sleep(0.5)  # the handlers write a line at a time
    assert any(r["process"] == "worker" for r in _logged(logs, "worker", request_id))
    rpcs = [r for r in _logged(logs, "embedder", request_id) if r["event"] == "rpc"]
    assert rpcs and all(r["code"] == "OK" for r in rpcs)
    httpx.delete(f"{base}/v1/products/rid-1", timeout=10)


def test_keys_and_limits_in_a_gateway_process(topology: dict) -> None:
    """A gateway process with keys required, over the same services: keys made and revoked by the CLI in Redis,
    401/403/429 as documented; and a gateway without keys refuses to bind beyond loopback."""
    env = {
        **topology["env"], "FS_AUTH_REQUIRED": "true", "FS_API_KEY_STORE": "redis",
        "FS_AUTH_SECRET": uuid.uuid4().hex, "FS_RATE_LIMIT_SEARCH": "3/minute",
        "FS_GATEWAY_PORT": str(_free_port()), "FS_GATEWAY_METRICS_PORT": str(_free_port()),
    }

    def keys(*args: str) -> str:
        done = subprocess.run(_cli("keys", *args), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip().splitlines()[-1]

    shop, bot = keys("create", "--scope", "search", "--name", "it-shop"), keys("create", "--scope", "catalog")
    log = (topology["logs"] / "gateway-auth.log").open("w")
    proc = subprocess.Popen(_cli("serve", "gateway"), env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['FS_GATEWAY_PORT']}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200  # open without a key
        except httpx.HTTPError:
            return False

    try:
        _wait(ready, "gateway with keys", {"gateway-auth": proc})
        stats = f"{base}/v1/stats"
        assert httpx.get(stats, timeout=10).status_code == 401
        assert httpx.get(stats, headers={"X-API-Key": bot}, timeout=10).status_code == 403
        answers = [httpx.get(stats, headers={"Authorization": f"Bearer {shop}"}, timeout=10) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert [r.headers["RateLimit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
        assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
        assert "revoked 1 key(s): it-shop" in keys("revoke", "it-shop")
        gone = httpx.get(stats, headers={"Authorization": f"Bearer {shop}"}, timeout=10)
        assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    open_env = {**env, "FS_AUTH_REQUIRED": "false", "FS_BIND_HOST": "0.0.0.0"}
    refused = subprocess.run(_cli("serve", "gateway"), env=open_env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "refusing to serve without API keys on 0.0.0.0" in refused.stderr


def test_a_stopped_detector_degrades_instead_of_hanging(topology: dict, small_records: list) -> None:
    procs = topology["procs"]
    procs["detector"].terminate()
    procs["detector"].wait(timeout=15)
    data = Path(small_records[0].image_path).read_bytes()
    start = time.monotonic()
    resp = httpx.post(
        f"{topology['base']}/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
        data={"mode": "fine"}, timeout=60,
    )
    assert resp.status_code == 200 and "detector" in resp.json()["degraded"]
    assert time.monotonic() - start < 30
    assert httpx.get(f"{topology['base']}/readyz", timeout=10).status_code == 503
