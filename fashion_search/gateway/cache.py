"""Redis cache of search responses; when Redis is unreachable the gateway answers uncached."""

from __future__ import annotations

import hashlib
import logging
import time

import redis
from prometheus_client import Counter

from fashion_search.core.settings import Settings

log = logging.getLogger(__name__)

# After a Redis failure, skip the cache for this long instead of paying a timeout on every request.
RETRY_AFTER_S = 10.0
CACHE_LOOKUPS = Counter("fs_cache_lookups_total", "Search cache lookups", ["result"])


class SearchCache:
    """get/put of JSON search responses keyed by image hash, parameters and index version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.cache_enabled
        self._down_until = 0.0
        self._client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=settings.cache_timeout_s,
            socket_connect_timeout=settings.cache_timeout_s, retry_on_timeout=False,
        )

    @staticmethod
    def key(
        image: bytes, mode: str, top_k: int, category: str | None, version: int, ranking: str = "", model: str = "",
        query: str = "",
    ) -> str:
        """Cache key; the index version makes every write (a payload-only update too) invalidate old answers, the
        ranking (query expansion, category vote) and the models (weights digests included) a settings or model
        change; query is the rest of the request (filters, page)."""
        digest = hashlib.sha256(image).hexdigest()
        model_digest = hashlib.sha256(model.encode()).hexdigest()[:16]
        query_digest = hashlib.sha256(query.encode()).hexdigest()[:16] if query else ""
        return f"fs:search:{digest}:{mode}:{top_k}:{category or ''}:{version}:{ranking}:m{model_digest}:q{query_digest}"

    def _usable(self) -> bool:
        return self.enabled and time.monotonic() >= self._down_until

    def get(self, key: str) -> str | None:
        """The cached JSON, or None (also when Redis is down)."""
        if not self._usable():
            CACHE_LOOKUPS.labels("off" if not self.enabled else "error").inc()
            return None
        try:
            value = self._client.get(key)
        except redis.RedisError as exc:
            self._mark_down(exc)
            CACHE_LOOKUPS.labels("error").inc()
            return None
        CACHE_LOOKUPS.labels("miss" if value is None else "hit").inc()
        return value.decode() if isinstance(value, bytes) else value

    def put(self, key: str, value: str) -> None:
        """Store a JSON response with the configured TTL; errors are logged, never raised."""
        if not self._usable():
            return
        try:
            self._client.set(key, value, ex=self.settings.cache_ttl_s)
        except redis.RedisError as exc:
            self._mark_down(exc)

    def ping(self) -> bool:
        """Whether Redis answers now."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def _mark_down(self, exc: Exception) -> None:
        log.warning("search cache unavailable (%s); serving uncached for %.0fs", exc, RETRY_AFTER_S)
        self._down_until = time.monotonic() + RETRY_AFTER_S
