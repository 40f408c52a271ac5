"""API keys: created once, stored only as an HMAC-SHA256 digest, in Redis (production) or a file (embedded)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import redis

from fashion_search.core.settings import Settings

SCOPES = ("search", "catalog", "admin")
KEY_PREFIX = "fsk_"
REDIS_HASH = "fs:apikeys"


class KeyCommandError(ValueError):
    """A key command that cannot be done (unknown scope, duplicate name, unknown key); the message says why."""


@dataclass
class KeyRecord:
    """What is stored about a key: never the key itself, only its digest."""

    digest: str
    name: str
    scopes: list[str]
    created: float = field(default_factory=time.time)
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        """admin is every scope."""
        return scope in self.scopes or "admin" in self.scopes

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(asdict(self), sort_keys=True)


class KeyStore(Protocol):
    """Where key records live; one record per digest."""

    def put(self, record: KeyRecord) -> None:
        """Insert or replace a record."""

    def get(self, digest: str) -> KeyRecord | None:
        """The record of a digest, or None."""

    def all(self) -> list[KeyRecord]:
        """Every record, revoked ones included."""


class FileKeyStore:
    """Records as one JSON file under the data dir (embedded mode); rewritten atomically, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, KeyRecord]] | None = None

    def _load(self) -> dict[str, KeyRecord]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._cache is None or self._cache[0] != mtime:
            raw = json.loads(self.path.read_text() or "{}")
            self._cache = (mtime, {d: KeyRecord(**r) for d, r in raw.items()})
        return dict(self._cache[1])

    def put(self, record: KeyRecord) -> None:
        """Insert or replace a record (temp file + rename: a reader never sees half a file)."""
        with self._lock:
            records = self._load()
            records[record.digest] = record
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({d: json.loads(r.to_json()) for d, r in records.items()}, indent=1))
            tmp.chmod(0o600)
            tmp.replace(self.path)

    def get(self, digest: str) -> KeyRecord | None:
        """The record of a digest, or None."""
        with self._lock:
            return self._load().get(digest)

    def all(self) -> list[KeyRecord]:
        """Every record."""
        with self._lock:
            return list(self._load().values())


class RedisKeyStore:
    """Records in one Redis hash (digest → JSON), shared by every gateway replica and the CLI."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def put(self, record: KeyRecord) -> None:
        """Insert or replace a record."""
        self._client.hset(REDIS_HASH, record.digest, record.to_json())

    def get(self, digest: str) -> KeyRecord | None:
        """The record of a digest, or None."""
        raw = self._client.hget(REDIS_HASH, digest)
        return KeyRecord(**json.loads(raw)) if raw else None

    def all(self) -> list[KeyRecord]:
        """Every record."""
        return [KeyRecord(**json.loads(v)) for v in self._client.hgetall(REDIS_HASH).values()]


def _secret(settings: Settings) -> bytes:
    """The HMAC key: the setting, or (file store only) a random one created once under the data dir."""
    if settings.auth_secret:
        return settings.auth_secret.encode()
    if settings.api_key_store == "redis":
        # Every replica and the CLI must hash alike: a per-machine random secret would split them.
        raise KeyCommandError("FS_API_KEY_STORE=redis needs FS_AUTH_SECRET (the same on every gateway and the CLI)")
    path = settings.data_dir / "auth" / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class ApiKeys:
    """Create, verify, list and revoke keys over one KeyStore."""

    def __init__(self, settings: Settings, store: KeyStore | None = None) -> None:
        self._secret = _secret(settings)
        if store is None:
            store = (
                RedisKeyStore(settings.redis_url, max(settings.cache_timeout_s, 1.0))
                if settings.api_key_store == "redis" else FileKeyStore(settings.data_dir / "auth" / "keys.json")
            )
        self.store = store

    def digest(self, key: str) -> str:
        """HMAC-SHA256 of a key under the server secret (keys are random, so no slow hash is needed)."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def create(self, scopes: list[str], name: str = "") -> tuple[str, KeyRecord]:
        """A new random key (returned once, never stored) and its record."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if not scopes or unknown:
            raise KeyCommandError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        name = name or f"key-{secrets.token_hex(3)}"
        if any(r.name == name and r.revoked is None for r in self.store.all()):
            raise KeyCommandError(f"a key named {name!r} exists; revoke it or choose another name")
        record = KeyRecord(digest=self.digest(key), name=name, scopes=sorted(set(scopes)))
        self.store.put(record)
        return key, record

    def lookup(self, key: str) -> KeyRecord | None:
        """The record of a presented key (revoked or not), or None if unknown."""
        return self.store.get(self.digest(key))

    def revoke(self, key_or_name: str) -> list[KeyRecord]:
        """Revoke the key itself, or every live key of that name; the revoked records."""
        matches = [r for r in [self.lookup(key_or_name)] if r is not None]
        if not matches:
            matches = [r for r in self.store.all() if r.name == key_or_name]
        live = [r for r in matches if r.revoked is None]
        if not matches:
            raise KeyCommandError(f"no key or key name {key_or_name!r}")
        for record in live:
            record.revoked = time.time()
            self.store.put(record)
        return live

    def list(self) -> list[KeyRecord]:
        """Every record, oldest first."""
        return sorted(self.store.all(), key=lambda r: r.created)
