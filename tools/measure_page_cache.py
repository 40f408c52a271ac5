"""int8 search latency with the index's files in the page cache and evicted from it, side by side, on one build of
bench-index's vectors. Eviction is posix_fadvise(DONTNEED) on every file of the closed shard (no root needed);
`fincore` (util-linux) shows what stays cached. Usage: .venv/bin/python tools/measure_page_cache.py [N] [ROUNDS]"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fashion_search.core.settings import Settings
from fashion_search.evaluation.index_bench import TOP_K, bench_vectors, built_index
from fashion_search.services.search.edge_index import EdgeIndex


def evict(path: Path) -> None:
    """Ask the kernel to drop the cached pages of every file under path (the shard must be closed)."""
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cached_mb(path: Path) -> float:
    """MB of the files under path that are in the page cache (util-linux `fincore`)."""
    files = [str(f) for f in path.rglob("*") if f.is_file() and f.stat().st_size]
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", *files],
                         check=True, capture_output=True, text=True).stdout
    return sum(int(x) for x in out.split()) / 2**20


def p50_ms(settings: Settings, dim: int, path: Path, queries: np.ndarray) -> float:
    """Open the index, answer every query once (no warm-up: the first reads are what is measured), p50 in ms."""
    index = EdgeIndex(settings, dim, path)
    try:
        times = []
        for q in queries:
            start = time.perf_counter()
            index.search(q, TOP_K)
            times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times)
    finally:
        index.close()


def main(n: int, rounds: int) -> None:
    settings = Settings().model_copy(update={"index_quantization": "int8"})
    _, v, (queries, _) = bench_vectors(settings, n)
    with tempfile.TemporaryDirectory(dir=settings.data_dir) as work, built_index(settings, v, Path(work)) as built:
        index, path, _, _ = built
        index.close()  # type: ignore[attr-defined]
        dim = v.vectors.shape[1]
        print(f"n={n:,}, int8, ef {settings.hnsw_ef_search}, rescoring {settings.quantization_oversampling:g}x; "
              f"shard {sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / 2**20:,.0f} MB on disk")
        for r in range(rounds):
            warm = p50_ms(settings, dim, path, queries)
            warm_cached = cached_mb(path)
            evict(path)
            evicted_cached = cached_mb(path)
            cold = p50_ms(settings, dim, path, queries)
            print(f"round {r + 1}: cached p50 {warm:.2f} ms ({warm_cached:,.0f} MB in the page cache), "
                  f"evicted p50 {cold:.2f} ms ({evicted_cached:,.0f} MB left cached), ratio {cold / warm:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
