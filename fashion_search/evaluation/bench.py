"""Per-stage latency benchmark (detect, segment, embed, search, total) for simple and fine mode."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from fashion_search.core.catalog import load_catalog
from fashion_search.core.images import decode_image
from fashion_search.core.model_base import resolve_device
from fashion_search.core.settings import Settings
from fashion_search.pipeline.ingest import Ingestor

STAGES = ("detect", "segment", "embed", "search", "total")
WARMUP = 3


Table = dict[str, dict[str, tuple[float, float]]]


def run_bench(settings: Settings, n_queries: int) -> tuple[Table, dict[str, object]]:
    """Index the sample catalog in a temporary index and time n queries per mode; returns p50/p95 per stage."""
    from fashion_search.pipeline.components import temporary_pipeline

    records = load_catalog(settings.sample_catalog)
    with temporary_pipeline(settings, "fs-bench-") as pipeline:
        local = pipeline.settings
        start = time.perf_counter()
        report = Ingestor(pipeline, local).ingest_records(records, with_garment=True)
        ingest_s = time.perf_counter() - start
        pipeline.index.optimize()
        # Queries: every k-th catalog photo, so they spread over all classes.
        step = max(1, len(records) // n_queries)
        queries = [decode_image(Path(r.image_path).read_bytes(), local) for r in records[::step][:n_queries]]
        table: dict[str, dict[str, tuple[float, float]]] = {}
        for mode in ("simple", "fine"):
            for q in queries[:WARMUP]:
                pipeline.search(q, mode, 10)
            samples: dict[str, list[float]] = {s: [] for s in STAGES}
            for q in queries:
                timings = pipeline.search(q, mode, 10).timings_ms
                for s in STAGES:
                    samples[s].append(timings.get(s, 0.0))
            table[mode] = {
                s: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for s, v in samples.items()
            }
    info: dict[str, object] = {
        "catalog_size": report.indexed, "queries": len(queries), "ingest_s": round(ingest_s, 1),
        "ingest_per_s": round(report.indexed / ingest_s, 1) if ingest_s else 0.0,
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "catalog_garment": settings.catalog_garment, "device": device_label(settings),
        "runtime": settings.cpu_runtime,
    }
    return table, info


def device_label(settings: Settings) -> str:
    """Where the in-process models run (settings.torch_device), with the GPU's name."""
    device = resolve_device(settings.torch_device)
    return f"{device.type} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def to_markdown(table: Table, info: dict[str, object], command: str) -> str:
    """Markdown report of a benchmark run."""
    lines = [
        f"Command: `{command}` — in-process models (embedded mode), Qdrant Edge index, "
        f"{info['torch_threads']} torch threads, {info['cpu']}, models on {info.get('device', 'cpu')}"
        f" (CPU runtime `{info.get('runtime', 'torchscript')}`).", "",
        f"Sample catalog: {info['catalog_size']} products indexed in {info['ingest_s']} s "
        f"({info['ingest_per_s']} products/s: detection, image and garment vectors, catalog garment "
        f"`{info['catalog_garment']}`). "
        f"{info['queries']} queries per mode after {WARMUP} warm-up queries.", "",
        "| mode | stage | p50 ms | p95 ms |", "|---|---|---|---|",
    ]
    for mode, stages in table.items():
        for stage, (p50, p95) in stages.items():
            lines.append(f"| {mode} | {stage} | {p50:.1f} | {p95:.1f} |")
    return "\n".join(lines) + "\n"


def save_report(path: Path, text: str) -> None:
    """Write a run's report into its marked section of the file, keeping the notes around it."""
    from fashion_search.evaluation.metrics import write_section

    write_section(path, "bench", text, "Benchmarks")
