"""A garment's kind from its evidence, one box per garment, kind mixing and the calibrated match confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_search.core.domain import Box, Detection, Hit, Product
from fashion_search.evaluation.confidence import fit_platt, reliability
from fashion_search.pipeline.kinds import (
    interleave,
    kind_shares,
    match_band,
    match_confidence,
    merge_garment_parts,
    photo_coverage,
    rerank_by_kind,
)
from fashion_search.pipeline.search_pipeline import _tag_kind, select_garments
from tests.conftest import make_settings


def _hit(pid: str, category: str, score: float) -> Hit:
    return Hit(Product(product_id=pid, category=category), score)


def test_a_pair_of_shoes_is_one_garment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    left = Detection(Box(10, 100, 60, 140), "shoes", 0.7)
    right = Detection(Box(62, 98, 115, 141), "shoes", 0.5)
    (pair,) = merge_garment_parts([right, left], settings)
    assert pair.box == Box(10, 98, 115, 141) and pair.score == 0.7
    # Shoes far apart (two people's) stay two garments.
    far = Detection(Box(400, 100, 450, 140), "shoes", 0.6)
    assert len(merge_garment_parts([left, far], settings)) == 2


def test_a_box_inside_a_box_of_the_same_kind_merges_and_other_kinds_stay(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    shirt = Detection(Box(0, 0, 100, 120), "shirt", 0.6)
    sleeve = Detection(Box(5, 10, 50, 60), "shirt", 0.3)
    jacket_inner_tee = Detection(Box(20, 20, 80, 100), "t-shirt", 0.5)
    merged = merge_garment_parts([shirt, sleeve, jacket_inner_tee], settings)
    assert [d.category for d in merged] == ["shirt", "t-shirt"]
    assert merged[0].box == shirt.box
    # Same kind, side by side with little overlap: two garments.
    other = Detection(Box(90, 0, 190, 120), "shirt", 0.4)
    assert len(merge_garment_parts([shirt, other], settings)) == 2


def test_select_garments_merges_before_the_cap(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_garments=2)
    shoes = [Detection(Box(10 + 55 * i, 100, 60 + 55 * i, 140), "shoes", 0.9 - i * 0.1) for i in range(2)]
    hat = Detection(Box(300, 0, 340, 30), "hat", 0.3)
    assert [d.category for d in select_garments([*shoes, hat], settings)] == ["shoes", "hat"]
    assert [d.category for d in select_garments([*shoes, hat], settings, merge=False)] == ["shoes", "shoes"]


def test_kind_evidence_moves_the_garments_kind_up(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, kind_own_weight=0.0, kind_image_weight=0.0, kind_label_weight=0.2, kind_keep_margin=0.1
    )
    hits = [_hit("skirt1", "skirt", 0.60), _hit("dress1", "dress", 0.55), _hit("shorts1", "shorts", 0.50)]
    dress = Detection(Box(0, 0, 100, 200), "dress", 0.8)
    assert rerank_by_kind(hits, dress, {}, (100, 200), settings)[0].product.product_id == "dress1"
    # A label under kind_label_min_score is no evidence.
    unsure = Detection(Box(0, 0, 100, 200), "dress", 0.1)
    assert rerank_by_kind(hits, unsure, {}, (100, 200), settings)[0].product.product_id == "skirt1"


def test_a_clear_nearest_garment_stays_first_and_kind_evidence_orders_the_rest(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, kind_own_weight=0.0, kind_image_weight=0.0, kind_label_weight=0.2, kind_keep_margin=0.1
    )
    dress = Detection(Box(0, 0, 100, 200), "dress", 0.8)
    # The nearest leads by 0.13: the very product, most likely, though the detector says dress.
    hits = [_hit("skirt1", "skirt", 0.68), _hit("shorts1", "shorts", 0.55), _hit("dress1", "dress", 0.50)]
    ranked = rerank_by_kind(hits, dress, {}, (100, 200), settings)
    assert [h.product.product_id for h in ranked] == ["skirt1", "dress1", "shorts1"]
    assert ranked[0].score >= ranked[1].score == pytest.approx(0.70)
    # Leading by 0.05 only: the kind evidence decides the first place too.
    close = [_hit("skirt1", "skirt", 0.60), _hit("shorts1", "shorts", 0.55), _hit("dress1", "dress", 0.50)]
    assert [h.product.product_id for h in rerank_by_kind(close, dress, {}, (100, 200), settings)] == [
        "dress1", "skirt1", "shorts1"]
    # Margin 0 keeps the nearest first always; a margin no lead reaches turns the rule off.
    always = settings.model_copy(update={"kind_keep_margin": 0.0})
    assert rerank_by_kind(close, dress, {}, (100, 200), always)[0].product.product_id == "skirt1"
    never = settings.model_copy(update={"kind_keep_margin": 2.0})
    assert rerank_by_kind(hits, dress, {}, (100, 200), never)[0].product.product_id == "dress1"


def test_the_whole_photos_kind_counts_only_for_a_garment_that_fills_it(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, kind_own_weight=0.0, kind_label_weight=0.0, kind_image_weight=0.4, kind_keep_margin=0.1
    )
    hits = [_hit("skirt1", "skirt", 0.60), _hit("dress1", "dress", 0.55)]
    shares = {"dress": 1.0}
    unsure = Detection(Box(0, 0, 100, 100), "skirt", 0.1)
    assert rerank_by_kind(hits, unsure, shares, (100, 100), settings)[0].product.product_id == "dress1"
    small = Detection(Box(0, 0, 30, 30), "skirt", 0.1)  # 9% of a street photo: its own kind
    assert rerank_by_kind(hits, small, shares, (100, 100), settings)[0].product.product_id == "skirt1"
    assert photo_coverage(Box(0, 0, 100, 100), (100, 100), settings) == 1.0
    assert photo_coverage(Box(0, 0, 10, 10), (100, 100), settings) == 0.0


def test_tag_mode_trusts_a_label_only_with_the_image_models_backing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tag_label_min_share=0.2)
    shares = {"shirt": 0.8, "pants": 0.2}
    assert _tag_kind(["shirt"], shares, settings) == "shirt"
    assert _tag_kind(["pants"], shares, settings) == "pants"  # backed by 2 of 10 neighbours
    assert _tag_kind(["pants"], {"shirt": 0.9, "pants": 0.1}, settings) == "shirt"  # conflicting label
    assert _tag_kind([], shares, settings) == "shirt"  # no trusted label: the image model's kind
    assert _tag_kind([], {}, settings) is None


def test_kind_shares_and_interleave() -> None:
    hits = [_hit("a", "shoes", 0.9), _hit("b", "shoes", 0.8), _hit("c", "pants", 0.7), _hit("d", "", 0.6)]
    assert kind_shares(hits, 4) == {"shoes": 0.5, "pants": 0.25}
    shoes, pants = hits[:2], [hits[2], _hit("e", "pants", 0.5)]
    assert [h.product.product_id for h in interleave([shoes, pants], 3)] == ["a", "c", "b"]


def test_confidence_is_monotone_and_banded(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, confidence_fit={"simple": (10.0, -6.0), "fine": (5.0, -2.0), "tag": (1, 0)},
                             good_match_confidence=0.8)
    low, high = match_confidence(0.3, "simple", settings), match_confidence(0.9, "simple", settings)
    assert 0.0 < low < high < 1.0
    assert match_band(high, settings) == "good" and match_band(low, settings) == "possible"
    assert match_confidence(0.3, "fine", settings) != low  # each mode its own fit


def test_platt_fit_recovers_a_known_curve() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 20_000)
    labels = rng.uniform(0, 1, scores.size) < 1 / (1 + np.exp(-(8 * scores - 4)))
    slope, offset = fit_platt(scores, labels)
    assert slope == pytest.approx(8, abs=0.5) and offset == pytest.approx(-4, abs=0.3)
    calibrated = 1 / (1 + np.exp(-(slope * scores + offset)))
    assert reliability(calibrated, labels.astype(float), 0.8)["ece"] < 0.02
