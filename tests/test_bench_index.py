"""bench-index's parts on a small index: synthetic vectors keep each category's mean, and an exact-scan index
(below the HNSW threshold) has recall 1 against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_search.core.settings import Settings
from fashion_search.evaluation.index_bench import (
    FILTERS,
    Row,
    Vectors,
    _mapped_vectors_mb,
    _quantized_mb,
    built_index,
    config_name,
    distinct_configs,
    held_out_queries,
    measure,
    rows_json,
    synthetic,
    to_markdown,
)


def real(n: int = 60, dim: int = 16) -> Vectors:
    rng = np.random.default_rng(0)
    cats = np.array(["dress", "shoe", "hat"] * (n // 3))
    centres = {c: rng.normal(size=dim) for c in ("dress", "shoe", "hat")}
    x = np.stack([centres[c] + 0.3 * rng.normal(size=dim) for c in cats]).astype(np.float32)
    return Vectors(x / np.linalg.norm(x, axis=1, keepdims=True), cats, np.full(n, 30.0, np.float32), "test")


def test_synthetic_vectors_follow_each_category(tmp_path: Path) -> None:
    r = real()
    v = synthetic(r, 600, seed=1)
    assert v.vectors.shape == (600, 16) and np.allclose(np.linalg.norm(v.vectors, axis=1), 1.0, atol=1e-5)
    for c in ("dress", "shoe", "hat"):
        mean_real = r.vectors[r.categories == c].mean(axis=0)
        mean_new = v.vectors[v.categories == c].mean(axis=0)
        assert float(mean_real @ mean_new) / (np.linalg.norm(mean_real) * np.linalg.norm(mean_new)) > 0.95


def test_an_exact_index_recalls_everything_and_the_rows_print(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    v = synthetic(real(), 300, seed=2)
    queries = held_out_queries(real(), 12, seed=3)
    truths: dict = {}
    with built_index(settings, v, tmp_path) as (index, _, rate, _):
        figures = {f: measure(index, v, queries, f, settings, truths) for f in FILTERS}
        again = measure(index, v, queries, "category", settings, truths)  # the exact answers come from the cache
    assert rate > 0 and all(fig["recall_at_10"] == 1.0 for fig in figures.values())
    assert set(truths) == set(FILTERS) and again["recall_at_10"] == 1.0
    assert again["exact_p50_ms"] == figures["category"]["exact_p50_ms"]
    row = Row(config="default", n=300, quantization="default", filter="unfiltered", ef=128, oversampling=2.0,
              upsert_per_s=rate,
              build_s=0.0,
              memory_mb=1.0, memory_mb_per_million=1.0, vector_memory_mb=0.5, vector_memory_mb_per_million=0.5,
              disk_mb=1.0, disk_mb_per_million=1.0, **figures["unfiltered"])
    assert '"config": "default"' in rows_json([row])
    info = {"n": 300, "dim": 16, "real": 60, "real_source": "test", "queries": 12, "cores": 2, "cpu": "x",
            "hnsw": "m=16", "oversampling": 2.0, "default": "int8"}
    assert "| default | 300 | 128 |" in to_markdown([row], info, "fashion-search bench-index")


def test_rows_name_their_ef_and_filter() -> None:
    assert config_name("default", 128, 128, "unfiltered") == "default"
    assert config_name("int8", 256, 128, "unfiltered") == "int8@ef256"
    assert config_name("int8", 256, 128, "price") == "int8@ef256+price"
    assert config_name("int8", 128, 128, "unfiltered", 3.0, 2.0) == "int8x3"
    assert config_name("int8", 256, 128, "price", 2.0, 2.0) == "int8@ef256+price"


def test_the_vectors_part_of_memory_counts_mapped_vector_pages(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    v = synthetic(real(), 300, seed=2)
    before = _mapped_vectors_mb()
    with built_index(settings, v, tmp_path) as (index, _, _, _):
        for q in v.vectors[:20]:
            index.search(q, 10)  # type: ignore[attr-defined]
        assert _mapped_vectors_mb() > before
    assert _quantized_mb(tmp_path) == 0.0  # float32 alone: no quantized copies


def test_default_is_the_shipped_quantization_and_runs_once(tmp_path: Path) -> None:
    names = ["default", "float32", "int8", "binary"]
    assert distinct_configs(names, Settings(data_dir=tmp_path, index_quantization="int8")) == [
        "default", "float32", "binary"]
    assert distinct_configs(names, Settings(data_dir=tmp_path, index_quantization="none")) == [
        "default", "int8", "binary"]
