"""Crash safety: the search service killed with SIGKILL while upserts stream in loses no acknowledged write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR, Product
from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.core.settings import Settings
from fashion_search.services.search.client import RemoteIndex

DIM = 8
# A search service over an Edge index at argv[1], on any free loopback port (printed), until killed.
SERVER = """
import sys, threading
from pathlib import Path
from fashion_search.core.settings import Settings
from fashion_search.services.search.edge_index import EdgeIndex
from fashion_search.services.search.server import start_server
settings = Settings(data_dir=Path(sys.argv[1]), grpc_timeout_s=5)
index = EdgeIndex(settings, 8, Path(sys.argv[1]) / "edge")
server, port = start_server(settings, port=0, index=index)
print(port, flush=True)
threading.Event().wait()
"""


def start(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    assert port.isdigit(), f"server did not start (exit {proc.poll()})"
    return proc, f"127.0.0.1:{port}"


def item(i: int) -> tuple[Product, dict[str, np.ndarray]]:
    v = np.random.default_rng(i).normal(size=DIM).astype(np.float32)
    return Product(f"c{i}", category="dress", price=float(i)), {IMAGE_VECTOR: v, GARMENT_VECTOR: v}


def test_sigkill_during_upserts_loses_no_acknowledged_write(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, grpc_timeout_s=5)
    proc, url = start(tmp_path)
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with RemoteIndex(url, settings) as remote:
            i = 0
            while not stop.is_set():
                batch = [item(i + j) for j in range(5)]
                try:
                    remote.upsert(batch)
                except ServiceUnavailable:
                    return  # the server is gone: this batch was never acknowledged
                acknowledged.extend(p.product_id for p, _ in batch)
                i += 5

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-stream: no flush, no close
    proc.wait(timeout=30)
    stop.set()
    thread.join(timeout=30)
    assert len(acknowledged) >= 200
    proc, url = start(tmp_path)
    try:
        with RemoteIndex(url, settings) as remote:
            assert remote.stats().count >= len(acknowledged)
            missing = [pid for pid in acknowledged if remote.get(pid) is None]
            assert missing == []
            last = acknowledged[-1]
            assert remote.get(last).price == float(last[1:])  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait(timeout=30)
