"""The Celery application (broker: FS_BROKER_URL, default the local Redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.signals import before_task_publish, task_postrun, task_prerun

from fashion_search.core.observability import accept_request_id, bind_request_id, current_request_id
from fashion_search.core.settings import Settings, get_settings

# The message header that carries the sender's request id (a gateway request's) to the worker.
REQUEST_ID_HEADER = "fs_request_id"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured so that no task is lost: late acks, requeue on worker loss, prefetch 1."""
    app = Celery(
        "fashion_search",
        broker=settings.broker_url or settings.redis_url,
        backend=settings.result_backend,
        include=["fashion_search.workers.tasks"],
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Ack after the task ran: a worker killed mid-batch leaves the message to be redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        # Model batches can take minutes on CPU; redeliver only well after that (settings.task_visibility_timeout_s).
        # Workers sweep for overdue messages every quarter timeout (at most 10 s); kombu's default is every 100 s.
        broker_transport_options={
            "visibility_timeout": settings.task_visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.task_visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
        # Keep the process's structured (JSON) log setup instead of Celery's plain-text one.
        worker_hijack_root_logger=False,
    )
    return app


celery_app = make_celery(get_settings())


@before_task_publish.connect
def _send_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Put the sender's request id, if any, in the task message."""
    request_id = current_request_id()
    if request_id and headers is not None:
        headers[REQUEST_ID_HEADER] = request_id


_unbind: dict[str, Callable[[], None]] = {}


@task_prerun.connect
def _bind_request_id(task_id: str = "", task: Task | None = None, **_: Any) -> None:
    """Log the task's lines (and its gRPC calls' metadata) under the request id that sent it."""
    request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task is not None else None
    if request_id:
        _unbind[task_id] = bind_request_id(accept_request_id(str(request_id)))


@task_postrun.connect
def _unbind_request_id(task_id: str = "", **_: Any) -> None:
    unbind = _unbind.pop(task_id, None)
    if unbind:
        unbind()
