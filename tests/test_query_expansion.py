"""Query expansion in the pipeline's simple mode, and choosing its depth on the embedder's product holdout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.datasets.splits import HOLDOUT, split_products
from fashion_search.evaluation.expansion import best_depth, expansion_sweep, holdout_mask, self_first
from fashion_search.pipeline.search_pipeline import SearchPipeline
from fashion_search.services.embedder.fashion_net import shipped_weights
from tests.conftest import make_settings, two_pipelines


@pytest.fixture(scope="module")
def pipelines(
    tmp_path_factory: pytest.TempPathFactory, shared_models: dict, small_records: list[CatalogRecord]
) -> Iterator[tuple[SearchPipeline, SearchPipeline]]:
    """Two pipelines over one index: without query expansion and with a depth of 3."""
    tmp = tmp_path_factory.mktemp("expansion")
    with two_pipelines(tmp, shared_models, small_records, {"query_expansion": 0}, {"query_expansion": 3}) as pair:
        yield pair


def test_simple_mode_expands_and_fine_mode_does_not(
    pipelines: tuple[SearchPipeline, SearchPipeline], small_records: list[CatalogRecord]
) -> None:
    plain, expanded = pipelines
    rec = small_records[6]
    photo = Image.open(rec.image_path).convert("RGB")
    before, after = plain.search(photo, "simple", 10), expanded.search(photo, "simple", 10)
    assert before.hits[0].product.product_id == after.hits[0].product.product_id == rec.product_id
    assert before.hits[0].score == pytest.approx(1.0, abs=1e-3)
    # Scored against the query plus its three nearest photos, the photo itself is no longer an exact match.
    assert after.hits[0].score < before.hits[0].score - 1e-3
    fine_before, fine_after = plain.search(photo, "fine", 10), expanded.search(photo, "fine", 10)
    assert [(h.product.product_id, round(h.score, 4)) for h in fine_before.hits] == [
        (h.product.product_id, round(h.score, 4)) for h in fine_after.hits
    ]


def test_sweep_searches_the_held_out_products_against_the_rest(
    tmp_path: Path, holdout_weights: Path, small_catalog_dir: Path, small_records: list[CatalogRecord]
) -> None:
    table, held, fitted = expansion_sweep(make_settings(tmp_path), str(small_catalog_dir), holdout_weights, [0, 2])
    assert (held, fitted) == (10, len(small_records) - 10)  # one of four per class
    assert set(table) == {0, 2}
    chosen = best_depth(table)
    for depth, row in table.items():
        figures = {"P@5", "P@10", "P@20", "mAP@20", "self@1"}
        assert figures <= set(row)
        assert all(0.0 <= row[k] <= 1.0 for k in figures)
        # The other depth carries its paired P@10 difference from the chosen one, inside its own interval.
        if depth == chosen:
            assert "ΔP@10" not in row
        else:
            assert row["ΔP@10"] == pytest.approx(row["P@10"] - table[chosen]["P@10"], abs=2e-4)
            assert row["ΔP@10 low"] <= row["ΔP@10"] <= row["ΔP@10 high"]
    # 30 fitted products leave only three per class: P@20 cannot exceed 3/20.
    assert table[0]["P@20"] <= 0.15 + 1e-9


def test_holdout_mask_is_the_trainers_split_and_refuses_fully_trained_weights() -> None:
    categories = ["dress"] * 20 + ["hat"] * 7
    mask = holdout_mask(categories, {"holdout_only": True, "holdout_share": HOLDOUT, "seed": 5})
    assert mask.tolist() == split_products(np.array([0] * 20 + [1] * 7), 5).tolist()
    assert mask.sum() == 3 + 1
    meta = torch.load(shipped_weights("fashion-v2"), map_location="cpu", weights_only=True)["meta"]
    with pytest.raises(ValueError, match="holdout-only"):
        holdout_mask(categories, meta)
    with pytest.raises(ValueError, match=r"held out 0\.3"):
        holdout_mask(categories, {"holdout_only": True, "holdout_share": 0.3, "seed": 5})


def test_cli_refuses_weights_trained_on_every_product(capsys: pytest.CaptureFixture[str]) -> None:
    from fashion_search.cli.main import main

    assert main(["eval", "expansion", "--weights", str(shipped_weights("fashion-v2")), "--catalog", "unused"]) == 2
    assert "holdout-only" in capsys.readouterr().err


def test_best_depth_keeps_exact_matches_first_then_prefers_precision_and_the_shallowest() -> None:
    row = {"P@5": 0.0, "P@20": 0.0, "mAP@20": 0.0, "self@1": 1.0}
    assert best_depth({0: {**row, "P@10": 0.8}, 2: {**row, "P@10": 0.9}, 5: {**row, "P@10": 0.9}}) == 2
    assert best_depth({0: {**row, "P@10": 0.9}, 2: {**row, "P@10": 0.8}}) == 0
    assert best_depth({0: {**row, "P@10": 0.8}, 2: {**row, "P@10": 0.85}, 20: {**row, "P@10": 0.9, "self@1": 0.4}}) == 2


def test_self_first_drops_when_the_expansion_outweighs_the_query() -> None:
    # The query's own photo is catalog[0]; three alike photos lie a little apart from it.
    catalog = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, 0.6], [0.8, 0.6]], dtype=np.float32)
    query = catalog[:1]
    assert self_first(query, catalog, np.array([0]), 0) == 1.0
    assert self_first(query, catalog, np.array([0]), 1) == 1.0
    assert self_first(query, catalog, np.array([0]), 4) == 0.0
