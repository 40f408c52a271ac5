"""Errors for a model or service that cannot answer now: down, overloaded, or out of the request's time."""

from __future__ import annotations


class ServiceUnavailable(RuntimeError):
    """A remote model or search service could not be reached in time."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service} service unavailable: {detail}")
        self.service = service


class Overloaded(ServiceUnavailable):
    """A model's queue is full: the caller should retry after retry_after_s (HTTP 503 with Retry-After)."""

    def __init__(self, service: str, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(service, f"overloaded: {detail}")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServiceUnavailable):
    """The request's deadline passed before a model or service could answer it."""

    def __init__(self, service: str, detail: str = "the request's deadline passed") -> None:
        super().__init__(service, detail)
