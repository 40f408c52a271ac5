"""Choosing the colour weight and mirror averaging on the embedder's product holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.catalog import CatalogRecord
from fashion_search.datasets.scenes import generate_scenes
from fashion_search.evaluation_embedding import (
    COLOR_WEIGHTS,
    MIRRORED,
    choose,
    instance_recall,
    settings_sweep,
    view_features,
)
from services.embedder.fashion_net import shipped_weights
from services.embedder.model import GarmentEmbedder
from services.embedder.train import HOLDOUT
from tests.conftest import make_settings

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


@pytest.mark.parametrize(("weight", "mirrored"), [(0.0, False), (0.35, True), (1.0, True)])
def test_one_pass_gives_the_embedders_own_vectors_for_each_setting(
    shared_models: dict, small_records: list[CatalogRecord], weight: float, mirrored: bool
) -> None:
    plain = shared_models["embedder"]
    images = [Image.open(r.image_path).convert("RGB") for r in small_records[:3]]
    update = {"color_weight": weight, "embed_mirrored": mirrored}
    embedder = GarmentEmbedder(plain.settings.model_copy(update=update), plain.backbone)
    swept = view_features(plain, iter(images), batch=2).vectors(weight, mirrored)
    np.testing.assert_allclose(swept, embedder.embed(images), atol=1e-5)


def test_recall_counts_undetected_garments_as_misses() -> None:
    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0.1, 0, 0], [0.2, 1, 0, 0], [0, 0, 0.4, 1]], dtype=np.float32)
    owners = np.array([0, 0, 2])  # right first; own product second; own product second
    assert instance_recall(queries, owners, gallery, total=4) == {"R@1": 0.25, "R@10": 0.75}
    assert instance_recall(queries[:0], owners[:0], gallery, total=2) == {"R@1": 0.0, "R@10": 0.0}


def test_choice_takes_the_best_sum_and_breaks_ties_towards_the_default_then_no_mirror() -> None:
    def row(weight: float, mirrored: bool, p10: float, r1: float) -> dict:
        return {"color_weight": weight, "mirrored": mirrored, "P@10": p10, "R@1": r1}

    default = {"color_weight": 0.35, "mirrored": False}
    rows = [row(0.35, False, 0.90, 0.80), row(0.5, True, 0.91, 0.80), row(0.2, False, 0.91, 0.80)]
    assert choose(rows, default) == {"color_weight": 0.2, "mirrored": False}
    rows.append(row(0.35, False, 0.92, 0.79))
    assert choose(rows, default) == default
    assert choose([*rows, row(0.75, True, 0.95, 0.80)], default) == {"color_weight": 0.75, "mirrored": True}


def test_sweep_on_scenes_of_held_out_products(tmp_path: Path) -> None:
    blob = torch.load(shipped_weights("fashion-v2"), map_location="cpu", weights_only=True)
    blob["meta"] = {**blob["meta"], "holdout_only": True, "holdout_share": HOLDOUT, "seed": 1}
    weights = tmp_path / "fit.pt"
    torch.save(blob, weights)
    scenes = tmp_path / "scenes"
    generate_scenes(str(VAL_SAMPLE), str(scenes), 12, 4, "test")
    result = settings_sweep(make_settings(tmp_path), str(VAL_SAMPLE), str(scenes), weights)
    assert len(result["rows"]) == len(COLOR_WEIGHTS) * len(MIRRORED)
    assert 0 < result["held_out_products"] < result["fitted_products"]
    assert 0 < result["detected"] <= result["garments"] and result["scenes"] <= 12
    assert {k: result["chosen"][k] for k in ("color_weight", "mirrored")} in [
        {"color_weight": r["color_weight"], "mirrored": r["mirrored"]} for r in result["rows"]
    ]
    for r in result["rows"]:
        assert 0.0 <= r["R@1"] <= r["R@10"] <= result["detected"] / result["garments"] + 1e-4  # rounded to 4 places
        assert 0.0 <= r["P@10"] <= 1.0
    # The shipped fashion-v2 saw these validation products in no stage: its own crops must find them often.
    assert max(r["R@1"] for r in result["rows"]) >= 0.5, result
