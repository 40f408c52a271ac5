"""Fault test on the real topology (loopback processes): the detector is SIGKILLed during fine-mode load, then
restarted on the same port.

While it is down every answer is a degraded 200 or a 503, none a 500, none later than the request deadline; once it
is back, answers recover without restarting the gateway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fashion_search.core.catalog import CatalogRecord
from fashion_search.evaluation.loadtest import CONFIGS, Topology, ingest_catalog, running, search_once
from tests.conftest import TEST_REDIS

pytestmark = pytest.mark.integration

DEADLINE_S = 6.0
# Time past the deadline an answer may take: the HTTP round trip and the pipeline's own work after its last call.
SLACK_S = 3.0
CLIENTS = 3
LOAD_S = 4.0  # load before the kill, and again while the detector is down
RECOVER_S = 60.0
CACHE_DB = 14


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("faults")
    topo = Topology(tmp / "data", f"{TEST_REDIS}/{CACHE_DB}", CONFIGS["on"], {
        # Uncached: every request must go through the models; one torch thread per service on a small machine.
        "FS_CACHE_ENABLED": "false", "FS_REQUEST_DEADLINE_S": str(DEADLINE_S), "FS_TORCH_THREADS": "1",
    }, tmp / "logs")
    with running(topo):
        assert ingest_catalog(topo, 5) == 5
        yield topo


def _load(topology: Topology, photos: list[bytes], stop: threading.Event, out: list[tuple[int, float, bool]]) -> None:
    """Fine-mode searches from one client until stop is set."""
    with httpx.Client(timeout=DEADLINE_S + 30) as client:
        i = 0
        while not stop.is_set():
            status, latency_ms, degraded = search_once(client, topology.base, photos[i % len(photos)], "fine")
            out.append((status, latency_ms, degraded))
            i += 1


def test_killed_detector_degrades_or_503_then_recovers_without_restarting_the_gateway(
    topology: Topology, small_records: list[CatalogRecord]
) -> None:
    photos = [Path(r.image_path).read_bytes() for r in small_records[:12]]
    gateway_pid = topology.procs["gateway"].pid
    answers: list[tuple[int, float, bool]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(topology, photos[i::CLIENTS], stop, answers)) for i in
               range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(LOAD_S)
    topology.kill("detector")  # mid-load: some requests are inside the detector right now
    killed_at = len(answers)
    time.sleep(LOAD_S)
    stop.set()
    for t in threads:
        t.join(timeout=DEADLINE_S + 40)
        assert not t.is_alive(), "a client hung past its deadline"
    during = answers[killed_at:]
    assert answers[:killed_at], "no load before the kill"
    assert during, "no requests while the detector was down"
    for status, latency_ms, _ in answers:
        assert status in (200, 503), f"answer {status} during the fault"
        assert latency_ms < (DEADLINE_S + SLACK_S) * 1000, f"answer after {latency_ms:.0f} ms"
    # Once the kill has been noticed, fine mode answers in simple mode, flagged (or 503 where no time was left).
    assert any(degraded for status, _, degraded in during if status == 200), during

    topology.start_service("detector")  # same port, same settings
    topology.wait_healthy(["detector"])
    deadline = time.monotonic() + RECOVER_S
    recovered = False
    with httpx.Client(timeout=DEADLINE_S + 30) as client:
        while time.monotonic() < deadline and not recovered:
            status, _, degraded = search_once(client, topology.base, photos[0], "fine")
            assert status in (200, 503)
            recovered = status == 200 and not degraded
            if not recovered:
                time.sleep(0.5)
    assert recovered, "fine mode did not recover after the detector came back"
    assert topology.procs["gateway"].pid == gateway_pid and topology.procs["gateway"].poll() is None
    assert topology.ready()
