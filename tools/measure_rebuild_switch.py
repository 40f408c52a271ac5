"""How long searches wait at a rebuild's switch: N random 542-d products served, N others rebuilt beside them, one
thread searching without pause through the commit. Usage: .venv/bin/python tools/measure_rebuild_switch.py [N]"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fashion_search.core.domain import IMAGE_VECTOR, Product, as_rebuildable
from fashion_search.core.garment_colour import garment_vector_dim
from fashion_search.core.settings import Settings
from fashion_search.services.search.factory import make_local_index

DIM, BATCH = 542, 500


def products(n: int, seed: int) -> list[tuple[Product, dict[str, np.ndarray]]]:
    """n products with random unit image vectors."""
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [(Product(f"p{i}", category="dress"), {IMAGE_VECTOR: x[i]}) for i in range(n)]


def measure(backend: str, n: int) -> str:
    """One backend's line: the commit's time, the longest search during it and the searches that failed."""
    queries = [v[IMAGE_VECTOR] for _, v in products(50, seed=3)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), index_backend=backend)
        index = make_local_index(settings, DIM)
        old, new = products(n, seed=1), products(n, seed=2)
        for b in range(0, n, BATCH):
            index.upsert(old[b:b + BATCH])
        rebuilding = as_rebuildable(index)
        name = rebuilding.begin_rebuild(DIM, garment_vector_dim(settings, DIM))
        for b in range(0, n, BATCH):
            rebuilding.rebuild_upsert(name, new[b:b + BATCH])
        timings: list[tuple[float, float]] = []
        failed: list[str] = []
        stop = threading.Event()

        def loop() -> None:
            k = 0
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    index.search(queries[k % len(queries)], 10)
                except Exception as exc:  # counted: the point of the measurement
                    failed.append(repr(exc))
                timings.append((start, time.perf_counter() - start))
                k += 1

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        rebuilding.commit_rebuild(name, index.version)
        t1 = time.perf_counter()
        time.sleep(0.5)
        stop.set()
        thread.join()
        index.close()
    during = max(d for t, d in timings if t0 - 0.05 <= t <= t1)
    return (f"{backend} n={n}: commit {t1 - t0:.3f} s, longest search during it {during * 1000:.0f} ms, "
            f"{len(timings)} searches, {len(failed)} failed")


def main() -> None:
    """Print one line per backend."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # Edge logs how long the swap held searches
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    for backend in ("edge", "qdrant"):
        print(measure(backend, n))


if __name__ == "__main__":
    main()
