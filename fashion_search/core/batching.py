"""Dynamic batching (the idea of Triton's dynamic batcher): concurrent requests to one model are gathered into one
forward pass, up to a batch size or a queue delay, behind a bounded queue that refuses at once when full."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fashion_search.core.deadlines import remaining
from fashion_search.core.observability import BATCH_SIZE
from fashion_search.core.settings import Settings
from fashion_search.core.unavailable import DeadlineExceeded, Overloaded

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class BatchPolicy:
    """How one model batches: on/off, most items per forward pass, longest wait for more, most requests admitted."""

    enabled: bool = True
    max_batch_size: int = 8
    max_delay_ms: float = 2.0
    queue_size: int = 64
    retry_after_s: int = 1


def batch_policy(settings: Settings, model: str, on_gpu: bool) -> BatchPolicy:
    """A model's policy from its settings: `model` is detector, segmenter or embedder (the image embedder's settings
    arrive in the embedder's fields, see Settings.image_embedder_settings); "auto" batches on a GPU only."""
    switch = getattr(settings, f"{model}_batching")
    return BatchPolicy(
        enabled=switch == "on" or (switch == "auto" and on_gpu),
        max_batch_size=getattr(settings, f"{model}_max_batch_size"),
        max_delay_ms=getattr(settings, f"{model}_max_queue_delay_ms"),
        queue_size=getattr(settings, f"{model}_queue_size"),
        retry_after_s=settings.overload_retry_after_s,
    )


@dataclass
class _Request(Generic[In, Out]):
    items: Sequence[In]
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Out] | None = None
    error: BaseException | None = None
    started: bool = False


class DynamicBatcher(Generic[In, Out]):
    """Runs `run_batch` (items → one output per item, in order) for many callers at once.

    Enabled, one worker thread takes the queued requests in arrival order, as many as fit in max_batch_size items
    (a larger request runs alone), and runs them as one call. A lone request runs at once; when several are
    queued and the batch is not full, it waits for more until the oldest has waited max_delay_ms. Disabled, each
    caller runs its own call in its own thread, as without a batcher. Either way at most queue_size requests are
    admitted (waiting or running); one more fails at once with Overloaded.
    """

    def __init__(self, name: str, run_batch: Callable[[list[In]], Sequence[Out]], policy: BatchPolicy) -> None:
        self.name = name
        self.policy = policy
        self._run_batch = run_batch
        self._lock = threading.Condition()
        self._queue: deque[_Request[In, Out]] = deque()
        self._admitted = 0
        self._worker: threading.Thread | None = None
        self._worker_pid = 0
        self.batch_sizes: list[int] = []  # items per forward pass, for tests and the load report

    def submit(self, items: Sequence[In]) -> list[Out]:
        """The outputs for items (one per item), computed in a batch with other callers' items when enabled; waits
        at most until the current request's deadline (DeadlineExceeded), refuses at once when full (Overloaded)."""
        if not items:
            return []
        with self._lock:
            if self._admitted >= self.policy.queue_size:
                raise Overloaded(self.name, f"{self._admitted} requests queued (queue_size {self.policy.queue_size})",
                                 self.policy.retry_after_s)
            self._admitted += 1
        try:
            if not self.policy.enabled:
                return self._call(list(items))
            return self._enqueue_and_wait(items)
        finally:
            with self._lock:
                self._admitted -= 1

    def _call(self, items: list[In]) -> list[Out]:
        BATCH_SIZE.labels(self.name).observe(len(items))
        outputs = list(self._run_batch(items))
        if len(outputs) != len(items):
            raise RuntimeError(f"{self.name}: {len(outputs)} outputs for {len(items)} inputs")
        return outputs

    def _enqueue_and_wait(self, items: Sequence[In]) -> list[Out]:
        request: _Request[In, Out] = _Request(items, time.monotonic())
        with self._lock:
            self._ensure_worker()
            self._queue.append(request)
            self._lock.notify_all()
        left = remaining()
        if not request.done.wait(None if left is None else max(0.0, left)):
            with self._lock:
                if not request.started:  # still queued: take it out, nobody will run it
                    self._queue.remove(request)
                    raise DeadlineExceeded(self.name, "the request's deadline passed while it was queued")
            request.done.wait()  # running: a forward pass is short, and its slot is held until it ends
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _ensure_worker(self) -> None:
        # A forked process (a Celery worker) inherits the object but not the thread: start one of its own.
        if self._worker is None or self._worker_pid != os.getpid() or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
            self._worker_pid = os.getpid()
            self._worker.start()

    def _take_batch(self) -> list[_Request[In, Out]]:
        """Wait for requests and take the next batch (called with the lock held)."""
        while not self._queue:
            self._lock.wait()
        limit = self.policy.max_batch_size
        # Only when others are already waiting is it worth waiting for more: a lone request never waits.
        if len(self._queue) > 1 and self.policy.max_delay_ms > 0:
            until = self._queue[0].enqueued + self.policy.max_delay_ms / 1000.0
            while sum(len(r.items) for r in self._queue) < limit and (wait := until - time.monotonic()) > 0:
                self._lock.wait(wait)
        batch = [self._queue.popleft()]
        size = len(batch[0].items)
        while self._queue and size + len(self._queue[0].items) <= limit:
            size += len(self._queue[0].items)
            batch.append(self._queue.popleft())
        for request in batch:
            request.started = True
        return batch

    def _loop(self) -> None:
        while True:
            with self._lock:
                batch = self._take_batch()
            items = [item for request in batch for item in request.items]
            try:
                outputs = self._call(items)
            except Exception as exc:  # every waiting caller gets the error; the worker lives on
                for request in batch:
                    request.error = exc
                    request.done.set()
                continue
            self.batch_sizes.append(len(items))
            del self.batch_sizes[:-1000]
            start = 0
            for request in batch:
                request.result = outputs[start:start + len(request.items)]
                start += len(request.items)
                request.done.set()
