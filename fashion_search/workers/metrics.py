"""Prometheus metrics of a Celery worker: tasks by outcome, retries, run time (Celery's signals) and queue depth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import redis
from celery import signals
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fashion_search.core.observability import LATENCY_BUCKETS
from fashion_search.core.settings import Settings

TASKS = Counter("fs_worker_tasks_total", "Celery tasks finished, by state", ["task", "state"])
FAILURES = Counter("fs_worker_task_failures_total", "Celery tasks that raised", ["task", "exception"])
RETRIES = Counter("fs_worker_task_retries_total", "Celery task retries scheduled", ["task"])
TASK_SECONDS = Histogram(
    "fs_worker_task_seconds", "Celery task run time", ["task"], buckets=(*LATENCY_BUCKETS, 60.0, 300.0, 900.0)
)
QUEUES = ("celery",)  # the default queue: every task here is sent to it
_started: dict[str, float] = {}


@signals.task_prerun.connect
def _prerun(task_id: str, **_: Any) -> None:
    _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _postrun(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    start = _started.pop(task_id, None)
    if start is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - start)
    TASKS.labels(task.name, state or "UNKNOWN").inc()


@signals.task_failure.connect
def _failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    FAILURES.labels(getattr(sender, "name", "?"), type(exception).__name__).inc()


@signals.task_retry.connect
def _retry(sender: Any = None, **_: Any) -> None:
    RETRIES.labels(getattr(sender, "name", "?")).inc()


class QueueDepth(Collector):
    """Messages waiting in each queue, read from the Redis broker at scrape time (LLEN of the queue's list)."""

    def __init__(self, broker_url: str) -> None:
        self._client = redis.Redis.from_url(broker_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("fs_worker_queue_depth", "Messages waiting in the broker queue", labels=["queue"])
        for queue in QUEUES:
            try:
                family.add_metric([queue], float(self._client.llen(queue)))
            except redis.RedisError:
                family.add_metric([queue], float("nan"))
        yield family


def register_queue_depth(settings: Settings) -> None:
    """Export the broker's queue depth from this process."""
    REGISTRY.register(QueueDepth(settings.broker_url or settings.redis_url))
