"""Ingest jobs in Redis (settings.redis_url): one report per job, each batch counted once however often it runs.

A batch's result is added by one Lua script that first marks the batch done, so a batch redelivered by the broker
(worker lost, visibility timeout) or retried never counts its products twice.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from fashion_search.core.settings import Settings

QUEUED, RUNNING, DONE = "queued", "running", "done"

# KEYS: job hash, done-batches set, refused list, duplicates list. ARGV: batch no, processed, indexed, ttl, number of
# refused entries, the refused entries (JSON)..., then the duplicate entries (JSON)...
_RECORD_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
local processed = redis.call('HINCRBY', KEYS[1], 'processed', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'indexed', ARGV[3])
local refused = 5 + tonumber(ARGV[5])
for i = 6, refused do redis.call('RPUSH', KEYS[3], ARGV[i]) end
for i = refused + 1, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if processed >= total then
  redis.call('HSET', KEYS[1], 'state', 'done')
else
  redis.call('HSET', KEYS[1], 'state', 'running')
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ARGV[4]) end
return 1
"""


# KEYS: latest-job hash. ARGV: job sequence number, product ids; an id's newest job has the highest number.
_CLAIM = """
for i = 2, #ARGV do
  local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[1]) > seen then redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
end
return 1
"""
SUPERSEDED = "superseded: a newer ingest job holds this product (a late or repeated delivery of an older one)"


@dataclass
class JobReport:
    """What a job has done so far: products processed (indexed or refused) of total, and each refusal's reason."""

    job_id: str
    state: str
    total: int
    processed: int
    indexed: int
    refused: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        """Products not yet processed."""
        return max(0, self.total - self.processed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON the HTTP API answers."""
        return {
            "job_id": self.job_id, "state": self.state, "total": self.total, "processed": self.processed,
            "indexed": self.indexed, "refused": self.refused, "remaining": self.remaining,
            "duplicates": self.duplicates,
        }


def refusal(product_id: str, reason: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """One refused record: its id, why, and the record itself (to re-run it)."""
    return {"product_id": product_id, "reason": reason, "record": record or {}}


class JobStore:
    """Create ingest jobs, add their batches' results exactly once, and read their reports."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis.Redis.from_url(settings.redis_url, socket_timeout=10)
        self._record = self.redis.register_script(_RECORD_BATCH)
        self._claim = self.redis.register_script(_CLAIM)
        self._latest = f"{settings.job_key_prefix}latest"

    def _keys(self, job_id: str) -> list[str]:
        base = f"{self.settings.job_key_prefix}{job_id}"
        return [base, f"{base}:done", f"{base}:refused", f"{base}:duplicates"]

    def create(self, total: int) -> tuple[str, int]:
        """A new job of `total` products: its id, and its sequence number (later jobs have higher ones)."""
        job_id = uuid.uuid4().hex
        key = self._keys(job_id)[0]
        seq = int(self.redis.incr(f"{self.settings.job_key_prefix}seq"))
        self.redis.hset(key, mapping={
            "state": QUEUED if total else DONE, "total": total, "processed": 0, "indexed": 0, "created": time.time(),
            "seq": seq,
        })
        self.redis.expire(key, self.settings.job_ttl_s)
        return job_id, seq

    def claim(self, seq: int, product_ids: list[str]) -> None:
        """Mark the products as held by job number seq, unless a newer job holds them already."""
        if product_ids:
            self._claim(keys=[self._latest], args=[seq, *product_ids])

    def superseded(self, seq: int, product_ids: list[str]) -> set[str]:
        """The products a newer job than number seq holds: writing them now would bring back older data."""
        if not product_ids:
            return set()
        newest = self.redis.hmget(self._latest, product_ids)
        return {pid for pid, n in zip(product_ids, newest, strict=True) if n is not None and int(n) > seq}

    def record_batch(
        self, job_id: str, batch: str, processed: int, indexed: int, refused: list[dict[str, Any]],
        duplicates: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Add a batch's result to its job unless that batch was added already; False if it was (or no such job).

        Waits out a Redis restart (settings.job_store_retry_s): the batch's products are indexed already, and
        only its count would be lost.
        """
        args = [batch, processed, indexed, self.settings.job_ttl_s, len(refused), *(json.dumps(r) for r in refused),
                *(json.dumps(d) for d in duplicates or [])]
        attempt = retry(
            retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
            wait=wait_exponential(multiplier=0.2, max=5), stop=stop_after_delay(self.settings.job_store_retry_s),
            reraise=True,
        )
        return int(attempt(self._record)(keys=self._keys(job_id), args=args)) == 1

    def get(self, job_id: str) -> JobReport | None:
        """The job's report, None if there is no such job (or it expired)."""
        key, _, refused_key, duplicates_key = self._keys(job_id)
        fields = {k.decode(): v.decode() for k, v in self.redis.hgetall(key).items()}
        if not fields:
            return None
        refused = [json.loads(r) for r in self.redis.lrange(refused_key, 0, -1)]
        return JobReport(
            job_id=job_id, state=fields.get("state", QUEUED), total=int(fields.get("total", 0)),
            processed=int(fields.get("processed", 0)), indexed=int(fields.get("indexed", 0)), refused=refused,
            created=float(fields.get("created", 0.0)),
            duplicates=[json.loads(d) for d in self.redis.lrange(duplicates_key, 0, -1)],
        )
