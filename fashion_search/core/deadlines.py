"""Per-request deadlines carried through a thread's context: every gRPC call gets the time that is left."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from fashion_search.core.unavailable import DeadlineExceeded

# Absolute time.monotonic() by which the current request must be answered; None: no deadline.
_deadline: ContextVar[float | None] = ContextVar("fs_deadline", default=None)


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    """Within the block, the request must finish in `seconds` (None: keep the enclosing deadline, if any); a nested
    deadline never extends an outer one."""
    if seconds is None:
        yield
        return
    new = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(new if outer is None else min(outer, new))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left until the current request's deadline (may be negative), or None without one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def call_timeout(service: str, default_s: float) -> float:
    """The timeout of the next call to `service`: what is left of the deadline, at most default_s; raises
    DeadlineExceeded at once when nothing is left."""
    left = remaining()
    if left is None:
        return default_s
    if left <= 0:
        raise DeadlineExceeded(service)
    return min(left, default_s)
