"""The vector index at scale (`fashion-search bench-index`): upsert rate, HNSW build, latency alone and under 8
clients, recall@10 against exact search, memory and disk, per configuration (float32 / int8, filters)."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fashion_search.core.domain import IMAGE_VECTOR, Product, SearchFilter
from fashion_search.core.settings import Settings

TOP_K = 10
CLIENTS = 8
BATCH = 1000
BRANDS = tuple(f"brand{i}" for i in range(20))
# Prices drawn log-normally around 40 (a shop's spread); the price filter keeps about a fifth of the catalog.
PRICE_RANGE = (20.0, 35.0)
# An upsert batch would trigger HNSW building as it goes; the bench builds once at the end to time it apart.
NO_AUTO_INDEXING_KB = 10**9


@dataclass
class Vectors:
    """Unit vectors with their category and price (the payload the filters use)."""

    vectors: np.ndarray
    categories: np.ndarray
    prices: np.ndarray
    source: str


@dataclass
class Row:
    """One configuration's figures (latency in ms, memory and disk in MB for the index as built)."""

    config: str
    n: int
    quantization: str
    filter: str
    ef: int
    oversampling: float | None
    upsert_per_s: float
    build_s: float
    p50_ms: float
    p99_ms: float
    p50_ms_8_clients: float
    p99_ms_8_clients: float
    qps_8_clients: float
    recall_at_10: float
    exact_p50_ms: float
    speedup: float
    memory_mb: float
    memory_mb_per_million: float
    vector_memory_mb: float
    vector_memory_mb_per_million: float
    disk_mb: float
    disk_mb_per_million: float


def real_vectors(settings: Settings, cache: Path) -> Vectors:
    """The sample catalog's image vectors (embedded once and cached under data_dir, keyed by the model)."""
    from fashion_search.core.catalog import load_catalog
    from fashion_search.core.images import decode_image
    from fashion_search.pipeline.components import build_embedder, build_image_embedder
    from fashion_search.pipeline.search_pipeline import prepare

    embedder = build_image_embedder(settings, build_embedder(settings))
    path = cache / f"real-{embedder.model_name.replace('/', '_')[:80]}.npz"
    if path.exists():
        data = np.load(path)
        return Vectors(data["vectors"], data["categories"], data["prices"], f"{path.name} (cached)")
    records = load_catalog(settings.sample_catalog)
    out: list[np.ndarray] = []
    for start in range(0, len(records), 32):
        chunk = records[start:start + 32]
        images = [prepare(decode_image(Path(r.image_path).read_bytes(), settings), settings) for r in chunk]
        out.append(np.asarray(embedder.embed(images), dtype=np.float32))
    vectors = np.concatenate(out)
    categories = np.array([r.category for r in records])
    prices = np.array([r.price for r in records], dtype=np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, vectors=vectors, categories=categories, prices=prices)
    return Vectors(vectors, categories, prices, f"sample catalog, {len(records)} photos, {embedder.model_name}")


def synthetic(real: Vectors, n: int, seed: int) -> Vectors:
    """n vectors: the real ones, then draws from each category's mean and per-dimension spread (normalised)."""
    rng = np.random.default_rng(seed)
    names, counts = np.unique(real.categories, return_counts=True)
    extra = max(0, n - len(real.vectors))
    chosen = rng.choice(len(names), size=extra, p=counts / counts.sum())
    parts, cats = [real.vectors[:n]], [real.categories[:n]]
    for c, name in enumerate(names):
        members = real.vectors[real.categories == name]
        k = int((chosen == c).sum())
        if k:
            mean, spread = members.mean(axis=0), members.std(axis=0)
            parts.append((mean + spread * rng.standard_normal((k, members.shape[1]))).astype(np.float32))
            cats.append(np.full(k, name))
    vectors = np.concatenate(parts)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(len(vectors))  # real and synthetic interleaved, as a growing catalog would be
    prices = np.round(rng.lognormal(np.log(40.0), 0.6, size=len(vectors)), 2).astype(np.float32)
    return Vectors(vectors[order], np.concatenate(cats)[order], prices, real.source)


def held_out_queries(real: Vectors, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Queries none of which is in the index (fresh draws of the same per-category distribution), with the
    category each was drawn from."""
    rng = np.random.default_rng(seed)
    names, counts = np.unique(real.categories, return_counts=True)
    out, cats = [], []
    for c in rng.choice(len(names), size=n, p=counts / counts.sum()):
        members = real.vectors[real.categories == names[c]]
        out.append(members.mean(axis=0) + members.std(axis=0) * rng.standard_normal(members.shape[1]))
        cats.append(names[c])
    q = np.asarray(out, dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True), np.array(cats)


def bench_vectors(
    settings: Settings, n: int, n_queries: int = 200, seed: int = 0,
) -> tuple[Vectors, Vectors, tuple[np.ndarray, np.ndarray]]:
    """The real catalog vectors, n vectors drawn like them (the index) and n_queries held-out queries."""
    real = real_vectors(settings, settings.data_dir / "bench-index")
    return real, synthetic(real, n, seed), held_out_queries(real, n_queries, seed + 1)


FILTERS: dict[str, Callable[[Vectors, str], tuple[SearchFilter | None, np.ndarray]]] = {
    "unfiltered": lambda v, c: (None, np.ones(len(v.vectors), dtype=bool)),
    "category": lambda v, c: (SearchFilter(categories=(c,)), v.categories == c),
    "price": lambda v, c: (
        SearchFilter(min_price=PRICE_RANGE[0], max_price=PRICE_RANGE[1]),
        (v.prices >= PRICE_RANGE[0]) & (v.prices <= PRICE_RANGE[1]),
    ),
}


def products(v: Vectors, start: int, stop: int) -> list[tuple[Product, dict[str, np.ndarray]]]:
    """Index items for vectors start..stop (image vector only; shop fields for the filters)."""
    return [
        (
            Product(product_id=f"b{i}", category=str(v.categories[i]), price=float(v.prices[i]),
                    brand=BRANDS[i % len(BRANDS)], in_stock=i % 5 != 0, tags=["sale"] if i % 7 == 0 else []),
            {IMAGE_VECTOR: v.vectors[i]},
        )
        for i in range(start, stop)
    ]


def exact_top(v: Vectors, query: np.ndarray, mask: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the k nearest vectors within mask, by an exact numpy scan."""
    scores = v.vectors @ query
    scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def _rss_mb() -> float:
    """Resident memory of this process (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _mapped_vectors_mb() -> float:
    """Resident pages of this process's memory-mapped float32 vector files (Qdrant's vector_storage-* folders)."""
    total_kb, in_vectors = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if not head.endswith(":"):  # a mapping's first line: address range, ..., path
            in_vectors = "/vector_storage-" in line
        elif in_vectors and head == "Rss:":
            total_kb += int(line.split()[1])
    return total_kb / 1024.0


def _quantized_mb(path: Path) -> float:
    """Size of the quantized copies on disk; kept in RAM (Memory.Pinned) they are resident whole."""
    return sum(f.stat().st_size for f in path.rglob("quantized*") if f.is_file()) / 2**20


def _resident_after_queries(
    settings_json: str, dim: int, path: str, queries: np.ndarray, out: multiprocessing.Queue[tuple[float, float]],
) -> None:
    """In a fresh process: open the built index, answer the queries, report the memory it added and the part of
    it that holds vectors (MB)."""
    from fashion_search.services.search.edge_index import EdgeIndex

    settings = Settings.model_validate_json(settings_json)
    before = _rss_mb()
    index = EdgeIndex(settings, dim, Path(path))
    for q in queries:
        index.search(q, TOP_K)
    quantized = _quantized_mb(Path(path)) if settings.index_quantization != "none" else 0.0
    out.put((_rss_mb() - before, _mapped_vectors_mb() + quantized))
    index.close()


def resident_mb(settings: Settings, dim: int, path: Path, queries: np.ndarray) -> tuple[float, float]:
    """The memory an opened index holds after answering queries, and its vectors' part, in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[float, float]] = ctx.Queue()
    proc = ctx.Process(target=_resident_after_queries, args=(settings.model_dump_json(), dim, str(path), queries, out))
    proc.start()
    total, vectors = out.get(timeout=600)
    proc.join(timeout=60)
    return round(float(total), 1), round(float(vectors), 1)


def empty_resident_mb(settings: Settings, dim: int, workdir: Path, queries: np.ndarray) -> float:
    """The same for an empty index of the same configuration: the fixed cost (WAL, pools) beside the vectors'."""
    from fashion_search.services.search.edge_index import EdgeIndex

    path = workdir / "empty"
    EdgeIndex(settings, dim, path).close()
    return resident_mb(settings, dim, path, queries)[0]


@contextmanager
def built_index(settings: Settings, v: Vectors, workdir: Path) -> Iterator[tuple[object, Path, float, float]]:
    """An EdgeIndex of v under workdir: (index, path, upserts per second, HNSW build seconds)."""
    from fashion_search.services.search.edge_index import EdgeIndex

    path = workdir / "shard"
    dim = v.vectors.shape[1]
    loader = EdgeIndex(settings, dim, path, indexing_threshold_kb=NO_AUTO_INDEXING_KB)
    try:
        start = time.perf_counter()
        for lo in range(0, len(v.vectors), BATCH):
            loader.upsert(products(v, lo, min(lo + BATCH, len(v.vectors))))
        upsert_s = time.perf_counter() - start
    finally:
        loader.close()
    # Reopened with the shipped indexing threshold: optimize() builds HNSW over the whole collection, once.
    index = EdgeIndex(settings, dim, path)
    try:
        start = time.perf_counter()
        index.optimize()
        build_s = time.perf_counter() - start
        yield index, path, len(v.vectors) / upsert_s, build_s
    finally:
        index.close()


def measure(
    index: object, v: Vectors, queries: tuple[np.ndarray, np.ndarray], filter_name: str, settings: Settings,
    truths: dict[str, tuple[list[np.ndarray], list[float]]] | None = None,
) -> dict[str, float]:
    """Latency alone and under CLIENTS concurrent clients, recall@10 and the exact scan's time for one filter
    (a category filter keeps the query's own category, as a shopper narrowing a search would).

    truths caches each filter's exact answers and scan times, so several ef values on one index scan once.
    """
    vectors, own = queries
    plans = [FILTERS[filter_name](v, str(own[i])) for i in range(len(vectors))]
    search = index.search  # type: ignore[attr-defined]

    def one(i: int) -> tuple[float, list[str]]:
        start = time.perf_counter()
        hits = search(vectors[i], TOP_K, filters=plans[i][0])
        return (time.perf_counter() - start) * 1000.0, [h.product.product_id for h in hits]

    for i in range(min(10, len(vectors))):  # warm-up
        one(i)
    # Index and numpy timed in separate passes: BLAS threads spinning after a scan would slow the next query.
    answered = [one(i) for i in range(len(vectors))]
    alone = [ms for ms, _ in answered]
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        together = [ms for ms, _ in pool.map(one, range(len(vectors)))]
    wall = time.perf_counter() - start
    truths = {} if truths is None else truths
    if filter_name not in truths:
        exact, exact_ms = [], []
        for i in range(len(vectors)):
            start = time.perf_counter()
            exact.append(exact_top(v, vectors[i], plans[i][1]))
            exact_ms.append((time.perf_counter() - start) * 1000.0)
        truths[filter_name] = (exact, exact_ms)
    exact, exact_ms = truths[filter_name]
    recalls = [
        len({f"b{j}" for j in truth} & set(ids)) / TOP_K for truth, (_, ids) in zip(exact, answered, strict=True)
    ]
    p50 = statistics.median(alone)
    return {
        "p50_ms": _percentile(alone, 50), "p99_ms": _percentile(alone, 99),
        "p50_ms_8_clients": _percentile(together, 50), "p99_ms_8_clients": _percentile(together, 99),
        "qps_8_clients": round(len(vectors) / wall, 1), "recall_at_10": round(float(np.mean(recalls)), 4),
        "exact_p50_ms": _percentile(exact_ms, 50), "speedup": round(statistics.median(exact_ms) / p50, 1),
    }


# Configurations by name; "default" is the shipped FS_INDEX_QUANTIZATION, whichever that is.
QUANTIZATIONS = {"float32": "none", "int8": "int8", "binary": "binary"}
CONFIGS = ("default", *QUANTIZATIONS)


def quantization_of(name: str, settings: Settings) -> str:
    """The index_quantization a configuration name stands for."""
    return settings.index_quantization if name == "default" else QUANTIZATIONS[name]


def distinct_configs(names: Sequence[str], settings: Settings) -> list[str]:
    """The names in order, each quantization once (a name that repeats the shipped one's quantization is dropped)."""
    seen: set[str] = set()
    out = []
    for name in names:
        if quantization_of(name, settings) not in seen:
            seen.add(quantization_of(name, settings))
            out.append(name)
    return out


def config_name(
    quantization: str, ef: int, shipped_ef: int, filter_name: str,
    oversampling: float | None = None, shipped_oversampling: float | None = None,
) -> str:
    """A row's name: the quantization, @ef when not the shipped ef, xN when not the shipped oversampling,
    +filter when filtered."""
    name = quantization if ef == shipped_ef else f"{quantization}@ef{ef}"
    if oversampling is not None and oversampling != shipped_oversampling:
        name += f"x{oversampling:g}"
    return name if filter_name == "unfiltered" else f"{name}+{filter_name}"


def run_bench_index(
    settings: Settings, n: int, n_queries: int = 200, seed: int = 0, workdir: Path | None = None,
    quantizations: Sequence[str] = ("default", "float32", "binary"), filters: Sequence[str] = tuple(FILTERS),
    efs: Sequence[int] = (), oversamplings: Sequence[float] = (),
    on_rows: Callable[[list[Row], dict[str, object]], None] | None = None,
) -> tuple[list[Row], dict[str, object]]:
    """Build each quantization's index of n vectors and measure every filter at each search ef and, when
    quantized, each oversampling (default: the shipped ones) on it; rows and run facts. on_rows gets the rows so
    far after each build."""
    real, v, queries = bench_vectors(settings, n, n_queries, seed)
    info: dict[str, object] = {
        "n": len(v.vectors), "dim": int(v.vectors.shape[1]), "real": len(real.vectors), "real_source": real.source,
        "queries": n_queries, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "hnsw": f"m={settings.hnsw_m}, ef_construct={settings.hnsw_ef_construct}, ef={settings.hnsw_ef_search}",
        "oversampling": settings.quantization_oversampling, "default": settings.index_quantization,
    }
    rows: list[Row] = []
    truths: dict[str, tuple[list[np.ndarray], list[float]]] = {}
    base = Path(workdir or settings.data_dir / "bench-index")
    base.mkdir(parents=True, exist_ok=True)
    for name in distinct_configs(quantizations, settings):
        local = settings.model_copy(update={"index_quantization": quantization_of(name, settings)})
        work = Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=base))
        quantized = local.index_quantization != "none"
        figures: dict[tuple[int, float | None, str], dict[str, float]] = {}
        try:
            with built_index(local, v, work) as (index, path, upsert_rate, build_s):
                for ef in efs or (settings.hnsw_ef_search,):
                    for over in (oversamplings or (settings.quantization_oversampling,)) if quantized else (None,):
                        searching = local.model_copy(update={
                            "hnsw_ef_search": ef,
                            "quantization_oversampling": over or settings.quantization_oversampling,
                        })
                        index.settings = searching  # type: ignore[attr-defined]
                        for f in filters:
                            figures[ef, over, f] = measure(index, v, queries, f, searching, truths)
            disk = _disk_mb(path)
            memory, vector_memory = resident_mb(local, v.vectors.shape[1], path, queries[0])
            fixed = empty_resident_mb(local, v.vectors.shape[1], work, queries[0])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        per_million = 1e6 / len(v.vectors)
        for (ef, over, f), fig in figures.items():
            rows.append(Row(
                config=config_name(name, ef, settings.hnsw_ef_search, f, over, settings.quantization_oversampling),
                n=len(v.vectors), quantization=name, filter=f, ef=ef, oversampling=over,
                upsert_per_s=round(upsert_rate, 1), build_s=round(build_s, 1), memory_mb=memory,
                memory_mb_per_million=round(max(0.0, memory - fixed) * per_million, 1), vector_memory_mb=vector_memory,
                vector_memory_mb_per_million=round(vector_memory * per_million, 1), disk_mb=round(disk, 1),
                disk_mb_per_million=round(disk * per_million, 1), **fig,
            ))
        if on_rows is not None:
            on_rows(rows, info)
    return rows, info


def rows_json(rows: Sequence[Row]) -> str:
    """The rows as a JSON list."""
    return json.dumps([asdict(r) for r in rows], indent=2)


def to_markdown(rows: Sequence[Row], info: dict[str, object], command: str) -> str:
    """The table, with how it was made."""
    lines = [
        f"`{command}`: {info['n']:,} vectors of {info['dim']} dimensions ({info['real']:,} real image vectors of the "
        f"sample catalog, {info['real_source']}, plus draws from each category's mean and per-dimension spread), "
        f"{info['queries']} held-out queries of the same distribution, top {TOP_K}; HNSW {info['hnsw']} "
        "(a row named @efN searched the same build with ef N; xK: rescoring K times top 10); "
        "category filter = the query's own category (about a tenth of the catalog); price filter = "
        f"{PRICE_RANGE[0]:g}..{PRICE_RANGE[1]:g} (about a fifth); "
        f"default = the shipped quantization ({info['default']}); "
        "int8 / binary = scalar int8 / 1-bit copies (8-bit queries) in RAM, float32 on disk, rescoring "
        f"{info['oversampling']}x oversampled. "
        f"Machine: {info['cores']} cores ({info['cpu']}), shared with other work, so compare rows of one run. "
        "Exact = numpy scan of the same float32 vectors in the same run; speed-up = exact p50 / index p50. "
        "Memory = resident memory a fresh process adds by opening the index and answering the queries; per 1M = "
        "the same less an empty index's (WAL and thread pools), scaled to a million vectors; vectors = the part of "
        "it that holds vectors: resident pages of the memory-mapped float32 files plus the quantized copies "
        "(in RAM whole); the rest is payload indexes, the WAL's mapped pages, the id tracker and the HNSW graph, "
        "alike in every configuration.",
        "",
        "| config | n | ef | upsert/s | build s | p50 ms | p99 ms | p50 ms (8 clients) | p99 ms (8 clients) | "
        "QPS (8 clients) | recall@10 | exact p50 ms | speed-up | memory MB | MB per 1M | vectors MB per 1M | "
        "disk MB per 1M |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.config} | {r.n:,} | {r.ef} | {r.upsert_per_s:,.0f} | {r.build_s:.1f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.p50_ms_8_clients:.2f} | {r.p99_ms_8_clients:.2f} | {r.qps_8_clients:.0f} | "
            f"{r.recall_at_10:.3f} | "
            f"{r.exact_p50_ms:.2f} | {r.speedup:.1f}x | {r.memory_mb:.0f} | {r.memory_mb_per_million:,.0f} | "
            f"{r.vector_memory_mb_per_million:,.0f} | {r.disk_mb_per_million:,.0f} |"
        )
    return "\n".join(lines) + "\n"


SWEEP_BUILDS = ((8, 100), (16, 64), (16, 100), (16, 200), (32, 100))
SWEEP_EFS = (32, 64, 128, 256)


def run_sweep(settings: Settings, n: int, n_queries: int = 200, seed: int = 0) -> list[dict[str, float]]:
    """Recall@10 and latency (unfiltered, float32) per HNSW m and ef_construct (one build each) and query ef."""
    _, v, queries = bench_vectors(settings, n, n_queries, seed)
    base = settings.data_dir / "bench-index"
    base.mkdir(parents=True, exist_ok=True)
    out: list[dict[str, float]] = []
    truths: dict[str, tuple[list[np.ndarray], list[float]]] = {}
    for m, ef_construct in SWEEP_BUILDS:
        build = settings.model_copy(
            update={"hnsw_m": m, "hnsw_ef_construct": ef_construct, "index_quantization": "none"},
        )
        work = Path(tempfile.mkdtemp(prefix=f"sweep-{m}-{ef_construct}-", dir=base))
        try:
            with built_index(build, v, work) as (index, _, _, build_s):
                for ef in SWEEP_EFS:
                    index.settings = build.model_copy(update={"hnsw_ef_search": ef})  # type: ignore[attr-defined]
                    fig = measure(index, v, queries, "unfiltered", build, truths)
                    out.append({"m": m, "ef_construct": ef_construct, "ef": ef, "build_s": round(build_s, 1),
                                "p50_ms": fig["p50_ms"], "p99_ms": fig["p99_ms"], "recall_at_10": fig["recall_at_10"]})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def sweep_markdown(rows: Sequence[dict[str, float]], n: int, command: str) -> str:
    """The sweep as a table."""
    lines = [
        f"`{command}`: {n:,} vectors, float32, unfiltered, top {TOP_K}; shared 2-core machine.", "",
        "| m | ef_construct | build s | ef | p50 ms | p99 ms | recall@10 |", "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r['m']} | {r['ef_construct']} | {r['build_s']:.1f} | {r['ef']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['recall_at_10']:.3f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
