"""On-disk cache of the frozen-backbone features the trainers compute once and reuse (under data/cache)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cached(cache_dir: Path, name: str, key: object, build: Callable[[], Any]) -> Any:
    """`build()`'s result, saved as cache_dir/name-<hash of key>.pt on first use and loaded from there after."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{name}-{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    value = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(value, path)
    return value
