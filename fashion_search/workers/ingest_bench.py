"""Ingest rate, products/s: in-process, 1 and 2 Celery workers; the earlier defaults (TorchScript, one photo per
forward pass, then batches) beside the current one (ONNX Runtime, batches).

Real processes on loopback: the configured broker (settings.broker_url), a search service holding the workers'
index, and `fashion-search serve worker` processes. Each configuration runs both batch sizes back to back.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.model_base import torch_threads
from fashion_search.core.settings import Settings
from fashion_search.pipeline.components import temporary_pipeline
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.workers.enqueue import enqueue_catalog, follow_job
from fashion_search.workers.jobs import JobStore

START_TIMEOUT_S = 600.0
Row = dict[str, object]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fashion_search.cli", *args]


# Each column of the table: its heading, the CPU runtime and the ingest batch size (None: the settings' batch size).
VARIANTS: list[tuple[str, str, int | None]] = [
    ("TorchScript, batch 1", "torchscript", 1),
    ("TorchScript, batched", "torchscript", None),
    ("ONNX Runtime, batched (default)", "onnxruntime", None),
]


def in_process_rate(settings: Settings, records: list[CatalogRecord], batch: int, runtime: str) -> float:
    """Products/s of the in-process ingest at this batch size and CPU runtime (models loaded and warmed before the
    clock starts)."""
    local = settings.model_copy(update={"ingest_batch_size": batch, "cpu_runtime": runtime})
    default_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads(local) or default_threads)  # configure_torch acts once per process
    with temporary_pipeline(local, "fs-bench-ingest-") as pipeline:
        ingestor = Ingestor(pipeline, pipeline.settings)
        ingestor.ingest_records(records[:1])  # load and trace the models
        start = time.perf_counter()
        report = ingestor.ingest_records(records)
        elapsed = time.perf_counter() - start
    torch.set_num_threads(default_threads)
    if report.failed:
        raise RuntimeError(f"in-process ingest refused {report.failed[:3]}")
    return len(records) / elapsed


@contextmanager
def celery_workers(settings: Settings, n: int, tmp: Path, runtime: str) -> Iterator[dict[str, str]]:
    """A search service and n workers on this CPU runtime (threads shared out among the cores), stopped on exit."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
    env.update({
        "FS_DATA_DIR": str(tmp), "FS_BIND_HOST": "127.0.0.1", "FS_SEARCH_PORT": str(port),
        "FS_BROKER_URL": settings.broker_url, "FS_RESULT_BACKEND": settings.result_backend,
        "FS_REDIS_URL": settings.redis_url, "FS_LOG_LEVEL": "WARNING",
    })
    procs = [subprocess.Popen(_cli("serve", "search"), env=env, stdout=subprocess.DEVNULL)]
    threads = max(1, (os.cpu_count() or 2) // n)
    compute = "FS_ONNX_THREADS" if runtime == "onnxruntime" else "FS_TORCH_THREADS"  # what runs the networks
    worker_env = {**env, "FS_SEARCH_URL": f"127.0.0.1:{port}", compute: str(threads), "FS_CPU_RUNTIME": runtime}
    try:
        _wait(lambda: subprocess.run(_cli("healthcheck", f"grpc://127.0.0.1:{port}"), env=env).returncode == 0)
        from fashion_search.workers.celery_app import celery_app

        for i in range(n):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "fashion_search.workers.celery_app:celery_app", "worker",
                 "--pool=solo", "--loglevel=WARNING", "-n", f"bench{i}-{os.getpid()}@%h"],
                env=worker_env, stdout=subprocess.DEVNULL,
            ))
        _wait(lambda: len(celery_app.control.ping(timeout=2.0) or []) >= n, procs)
        yield worker_env
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(check: object, procs: list[subprocess.Popen] | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc in procs or []:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        if check():  # type: ignore[operator]
            return
        time.sleep(1.0)
    raise TimeoutError(f"not ready after {START_TIMEOUT_S}s")


def queue_rate(settings: Settings, records: list[CatalogRecord], batch: int) -> float:
    """Products/s through the queue at this batch size, from the first task sent to the job's last product."""
    local = settings.model_copy(update={"ingest_batch_size": batch})
    jobs = JobStore(local)
    start = time.perf_counter()
    job_id = enqueue_catalog(records, local, jobs)
    report = follow_job(jobs, job_id, timeout_s=START_TIMEOUT_S * 3, desc=f"bench batch {batch}")
    elapsed = time.perf_counter() - start
    if report.refused:
        raise RuntimeError(f"queue ingest refused {report.refused[:3]}")
    return len(records) / elapsed


def run_ingest_bench(settings: Settings, n_products: int) -> tuple[list[Row], dict[str, object]]:
    """Products/s per configuration (a row) and VARIANTS (its columns), each row's columns measured back to back."""
    if not settings.broker_url:
        raise ValueError("the ingest benchmark needs a broker for its Celery rows: set FS_BROKER_URL")
    records = load_catalog(settings.sample_catalog)
    step = max(1, len(records) // n_products)
    records = records[::step][:n_products]  # spread over every class
    columns = [(label, runtime, batch or settings.ingest_batch_size) for label, runtime, batch in VARIANTS]
    rows: list[Row] = [{"config": "in-process", **{
        label: in_process_rate(settings, records, batch, runtime) for label, runtime, batch in columns
    }}]
    for workers in (1, 2):
        row: Row = {"config": f"{workers} Celery worker{'s' if workers > 1 else ''}"}
        for runtime in dict.fromkeys(runtime for _, runtime, _ in columns):
            with tempfile.TemporaryDirectory(prefix="fs-bench-workers-") as tmp, \
                    celery_workers(settings, workers, Path(tmp), runtime):
                queue_rate(settings, records[:workers], 1)  # the workers' first batch, off the clock
                for label, col_runtime, batch in columns:
                    if col_runtime == runtime:
                        row[label] = queue_rate(settings, records, batch)
        rows.append(row)
    info: dict[str, object] = {
        "products": len(records), "batch": settings.ingest_batch_size,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "catalog_garment": settings.catalog_garment, "load": os.getloadavg()[0],
    }
    return rows, info


def ingest_markdown(rows: list[Row], info: dict[str, object], command: str) -> str:
    """The ingest table: products/s per configuration and variant, and the default's speed-up over the first."""
    labels = [label for label, _, _ in VARIANTS]
    lines = [
        f"Command: `{command}` — {info['products']} sample-catalog products (every class), default settings "
        f"(catalog garment `{info['catalog_garment']}`: detection, segmentation, image and garment vectors), "
        f"{info['cores']} cores ({info['cpu']}), load average {info['load']:.1f} at the end; compare within a row. "
        f"Columns: the CPU runtime (`FS_CPU_RUNTIME`) and the models on one photo per forward pass (batch 1) or on "
        f"batches of {info['batch']} (`FS_INGEST_BATCH_SIZE`). Workers: `serve worker` processes (solo pool, threads "
        "= cores / workers) writing to one search service; rates run from the first task sent to the job's last "
        "product.", "",
        f"| configuration | {' | '.join(f'{label}, products/s' for label in labels)} | default / first |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    for row in rows:
        rates = [float(row[label]) for label in labels]  # type: ignore[arg-type]
        cells = " | ".join(f"{rate:.2f}" for rate in rates)
        lines.append(f"| {row['config']} | {cells} | {rates[-1] / rates[0]:.1f}× |")
    return "\n".join(lines) + "\n"
