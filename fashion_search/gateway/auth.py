"""Per-route access: `dependencies=[requires("search")]` checks the request's API key and its scope, then rate-limits
the key (moving window, in Redis, with the `limits` library); the gateway runs open when FS_AUTH_REQUIRED is off."""

from __future__ import annotations

import logging
import math
import time
from typing import Annotated, Any

import redis
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse, storage, strategies
from limits.errors import StorageError
from prometheus_client import Counter

from fashion_search.core.settings import Settings
from fashion_search.gateway.keys import SCOPES, ApiKeys, KeyRecord

log = logging.getLogger(__name__)

AUTH_FAILURES = Counter("fs_auth_failures_total", "Requests refused by authentication", ["reason"])
RATE_LIMITED = Counter("fs_rate_limited_total", "Requests refused by the per-key rate limit", ["scope"])
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Routes anyone may call: the probes, the search page and the API docs (their API calls need a key like any other).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
RATE_STATE = "ratelimit_headers"
# Declared as security schemes so the OpenAPI document (and /docs' Authorize button) shows how to send a key.
BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer KEY`")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key, the other way to send it")


def check_exposure(settings: Settings) -> str:
    """Refuse to serve an open API beyond loopback unless FS_ALLOW_OPEN_BIND says so, or a page key that is not a
    live search-only key; the line to print on start."""
    if settings.auth_required:
        check_page_key(settings)
        page = ", the search page sends FS_PAGE_API_KEY" if settings.page_api_key else ""
        return f"API keys required (store: {settings.api_key_store}){page}"
    if settings.bind_host not in LOOPBACK and not settings.allow_open_bind:
        raise SystemExit(
            f"error: refusing to serve without API keys on {settings.bind_host}: set FS_AUTH_REQUIRED=true "
            "(and create keys with `fashion-search keys create`), or FS_ALLOW_OPEN_BIND=true if that is intended"
        )
    return f"auth is OFF: anyone who can reach {settings.bind_host}:{settings.gateway_port} may call the API"


def check_page_key(settings: Settings) -> None:
    """Refuse to start with a page key that is unknown, revoked or allowed more than search: every visitor of the
    page can read it."""
    if not settings.page_api_key:
        return
    record = ApiKeys(settings).lookup(settings.page_api_key)
    if record is None or record.revoked is not None:
        raise SystemExit("error: FS_PAGE_API_KEY is not a live key of the key store: create one with "
                         "`fashion-search keys create --scope search --name page`")
    if record.scopes != ["search"]:
        raise SystemExit(f"error: FS_PAGE_API_KEY ({record.name!r}) has the scopes {', '.join(record.scopes)}; "
                         "the page's key is public, so it may have the search scope alone")


class Access:
    """The app's key verifier and limiter, built once per app from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits: dict[str, RateLimitItem] = {s: parse(getattr(settings, f"rate_limit_{s}")) for s in SCOPES}
        self.keys: ApiKeys | None = None
        if settings.auth_required:  # without keys there is nothing to limit per key
            self.keys = ApiKeys(settings)
            uri = settings.rate_limit_storage_url or settings.redis_url
            self.limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(uri))

    def authenticate(self, key: str) -> KeyRecord:
        """The presented key's record; 401 (saying why) without one, or for an unknown or revoked key."""
        assert self.keys is not None
        challenge = {"WWW-Authenticate": "Bearer"}
        if not key:
            AUTH_FAILURES.labels("missing").inc()
            raise HTTPException(401, "missing API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                                headers=challenge)
        try:
            record = self.keys.lookup(key)
        except redis.RedisError as exc:
            log.warning("API key store unreachable: %s", exc)
            raise HTTPException(503, "API key store unavailable; retry", headers={"Retry-After": "5"}) from None
        if record is None:
            AUTH_FAILURES.labels("invalid").inc()
            raise HTTPException(401, "invalid API key", headers=challenge)
        if record.revoked is not None:
            AUTH_FAILURES.labels("revoked").inc()
            raise HTTPException(401, f"API key {record.name!r} was revoked", headers=challenge)
        return record

    def limit(self, request: Request, record: KeyRecord, scope: str) -> None:
        """Count one hit of the key on this scope's limit; 429 past it. Headers go out with every answer."""
        item = self.limits[scope]
        who = record.digest[:16]
        try:
            allowed = self.limiter.hit(item, who, scope)
            stats = self.limiter.get_window_stats(item, who, scope)
        except (redis.RedisError, StorageError, ConnectionError) as exc:
            # An outage of the limiter's Redis must not take the API down with it: serve unlimited, loudly.
            log.warning("rate limiter unavailable, not limiting: %s", exc)
            return
        reset_s = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "RateLimit-Limit": str(item.amount), "RateLimit-Remaining": str(max(0, stats.remaining)),
            "RateLimit-Reset": str(reset_s), "RateLimit-Policy": f"{item.amount};w={item.get_expiry()}",
        }
        request.state.__setattr__(RATE_STATE, headers)
        if not allowed:
            RATE_LIMITED.labels(scope).inc()
            raise HTTPException(
                429, f"rate limit of {item} for {scope} exceeded by key {record.name!r}; retry in {reset_s}s",
                headers={**headers, "Retry-After": str(max(1, reset_s))},
            )


class ScopeCheck:
    """The dependency behind `requires(scope)`; tests read `.scope` to know what each route needs."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; one of {SCOPES}")
        self.scope = scope

    def __call__(
        self, request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        api_key: Annotated[str | None, Security(API_KEY)],
    ) -> KeyRecord | None:
        access: Access = request.app.state.access
        if access.keys is None:
            return None
        record = access.authenticate((bearer.credentials if bearer else api_key or "").strip())
        if not record.allows(self.scope):
            AUTH_FAILURES.labels("scope").inc()
            raise HTTPException(403, f"API key {record.name!r} lacks the {self.scope!r} scope (has: "
                                     f"{', '.join(record.scopes)})")
        access.limit(request, record, self.scope)
        request.state.api_key_name = record.name
        return record


def requires(scope: str) -> Any:
    """One route's access rule, e.g. `@router.post(..., dependencies=[requires("catalog")])`."""
    return Depends(ScopeCheck(scope))
