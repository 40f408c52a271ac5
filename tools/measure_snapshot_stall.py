"""Searches during a snapshot: one thread snapshots an Edge index of N bench-index vectors while another searches
without pause; how many searches it answered meanwhile and the longest wait.
Usage: .venv/bin/python tools/measure_snapshot_stall.py [N]"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from fashion_search.core.settings import Settings
from fashion_search.evaluation.index_bench import TOP_K, bench_vectors, built_index


def main(n: int) -> None:
    settings = Settings()
    _, v, (queries, _) = bench_vectors(settings, n)
    with tempfile.TemporaryDirectory(dir=settings.data_dir) as work, built_index(settings, v, Path(work)) as built:
        index = built[0]
        for q in queries:  # warm, so the figures below are the snapshot's doing
            index.search(q, TOP_K)  # type: ignore[attr-defined]
        done, took, waits = threading.Event(), [], []

        def snapshot() -> None:
            start = time.perf_counter()
            index.snapshot(Path(work) / "snapshots")  # type: ignore[attr-defined]
            took.append(time.perf_counter() - start)
            done.set()

        worker = threading.Thread(target=snapshot)
        worker.start()
        while not done.is_set():
            start = time.perf_counter()
            index.search(queries[len(waits) % len(queries)], TOP_K)  # type: ignore[attr-defined]
            waits.append((time.perf_counter() - start) * 1000.0)
        worker.join()
    print(f"n={n:,}: snapshot {took[0]:.2f} s; {len(waits)} searches answered meanwhile, "
          f"p50 {statistics.median(waits):.1f} ms, longest {max(waits):.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
