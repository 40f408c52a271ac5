"""Snapshots: a restored index answers exactly as the index did when the snapshot was taken (Edge and qdrant-client
local mode, through the `fashion-search snapshot` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_search.cli.main import main
from fashion_search.core.domain import IMAGE_VECTOR, Product, SearchFilter, VectorIndex
from fashion_search.core.settings import Settings, get_settings
from fashion_search.services.search.factory import make_local_index
from fashion_search.services.search.snapshots import list_snapshots

DIM = 8


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def items(n: int, seed: int) -> list[tuple[Product, dict[str, np.ndarray]]]:
    v = unit(n, seed)
    return [(Product(f"s{seed}-{i}", category=("dress", "shoe")[i % 2], price=float(i), brand="acme"),
             {IMAGE_VECTOR: v[i]}) for i in range(n)]


def answers(index: VectorIndex) -> list[list[tuple[str, float]]]:
    queries = unit(5, seed=99)
    out = []
    for q in queries:
        for f in (None, SearchFilter(categories=("shoe",), max_price=20.0)):
            out.append([(h.product.product_id, round(h.score, 5)) for h in index.search(q, 10, filters=f)])
    return out


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
def test_a_restored_index_answers_exactly_as_before(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("FS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FS_INDEX_BACKEND", backend)
    get_settings.cache_clear()  # the command reads the settings once per process
    settings = Settings()
    index = make_local_index(settings, DIM)
    index.upsert(items(40, seed=1))
    before, version = answers(index), index.version
    index.close()

    assert main(["snapshot", "create"]) == 0
    assert len(list_snapshots(settings)) == 1
    name = list_snapshots(settings)[0].name
    assert main(["snapshot", "list"]) == 0 and name in capsys.readouterr().out

    index = make_local_index(settings, DIM)  # written after the snapshot: must be gone after the restore
    index.delete([f"s1-{i}" for i in range(10)])
    index.upsert(items(20, seed=2))
    assert answers(index) != before
    index.close()

    assert main(["snapshot", "restore", name]) == 0
    index = make_local_index(settings, DIM)
    try:
        assert answers(index) == before
        assert index.stats().count == 40
        assert index.version > version + 1  # above every version served before: no stale cached answer
    finally:
        index.close()
    assert main(["snapshot", "restore", "nope.snapshot.tar"]) == 2
    get_settings.cache_clear()
