"""The detector trainer: the head learns from cached features, and the epoch count comes from a train split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_search.datasets.scenes import generate_scenes, load_scenes
from fashion_search.services.detector.box_head import BoxHead, Scoring
from fashion_search.services.detector.centernet import MID_CHANNELS, STRIDE, VARIANTS, CenterHead
from fashion_search.services.detector.metrics import detection_map
from fashion_search.services.detector.training.box_head import (
    choose_min_score,
    detect_all,
    proposals_of,
    train_box_head,
    truths_of,
)
from fashion_search.services.detector.training.train import (
    cache_pyramid,
    evaluate,
    holdout_report,
    split_scenes,
    targets,
    train_head,
)

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


def _scenes(n: int, per_scene: int = 2) -> list[dict]:
    """Scene records whose garments come from 3n products of two classes (only what the split reads)."""
    rng = np.random.default_rng(0)
    return [{"objects": [{"product_id": f"p{k}", "category": "dress" if k % 2 else "skirt"}
                         for k in rng.choice(3 * n, size=per_scene, replace=False)]} for _ in range(n)]


def test_split_is_seeded_and_product_disjoint() -> None:
    scenes = _scenes(400)
    held = split_scenes(scenes, seed=3)
    assert np.array_equal(held, split_scenes(scenes, seed=3))
    assert not np.array_equal(held, split_scenes(scenes, seed=4))
    # Every held-out scene shows a product that no fit scene shows: held-out scenes test unseen products.
    fit_products = {o["product_id"] for s, h in zip(scenes, held, strict=True) if not h for o in s["objects"]}
    assert all(any(o["product_id"] not in fit_products for o in s["objects"])
               for s, h in zip(scenes, held, strict=True) if h)
    assert 0.1 < held.mean() < 0.35
    # Scenes added after the first 400 (the product photos) follow their products and leave the split alone.
    extra = [{"objects": [{"product_id": f"p{k}", "category": "dress" if k % 2 else "skirt"}]} for k in range(1200)]
    grown = split_scenes(scenes + extra, seed=3, defining=len(scenes))
    assert np.array_equal(grown[:400], held)
    shown = {o["product_id"] for s in scenes for o in s["objects"]}
    for e, h in zip(extra, grown[400:], strict=True):
        product = e["objects"][0]["product_id"]
        assert not h or (product in shown and product not in fit_products)
    assert grown[400:].any()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A first-stage head trained on 18 generated scenes (6 held out), with the cached features."""
    tmp_path = tmp_path_factory.mktemp("detector")
    generate_scenes(str(VAL_SAMPLE), str(tmp_path / "scenes"), 24, 5, "test")
    scenes = load_scenes(tmp_path / "scenes")
    variant = VARIANTS["centernet-v2"]
    feats = cache_pyramid(variant, scenes, tmp_path / "cache")
    grid = variant.input_size // STRIDE
    labels = [[targets(s, False, grid), targets(s, True, grid)] for s in scenes]
    fit, hold = np.arange(18), np.arange(18, 24)
    head, _ = train_head(variant, feats, labels, fit, 6, 6, 0, scenes)
    # With a holdout, the head returned is the best epoch's there (on 6 scenes, possibly an early one).
    _, history = train_head(variant, feats, labels, fit, 2, 6, 0, scenes, hold)
    return {"scenes": scenes, "variant": variant, "feats": feats, "fit": fit, "hold": hold, "head": head,
            "history": history, "cache": tmp_path / "cache"}


def test_trained_head_finds_the_garments_it_was_trained_on(trained: dict) -> None:
    variant, feats, scenes, fit = trained["variant"], trained["feats"], trained["scenes"], trained["fit"]
    assert len(trained["history"]) == 2 and all(0.0 <= v <= 1.0 for v in trained["history"])
    untrained = CenterHead(deep_channels=variant.deep_channels)
    learned, _, _ = evaluate(trained["head"], feats, scenes, fit)
    before, _, _ = evaluate(untrained, feats, scenes, fit)
    assert learned > before + 0.3, (learned, before)
    # The cache is reused: a second call returns the same features without recomputing them.
    again = cache_pyramid(variant, scenes, trained["cache"])
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(feats, again, strict=True))


def test_box_head_learns_to_name_the_proposals(trained: dict) -> None:
    feats, scenes, fit, hold = trained["feats"], trained["scenes"], trained["fit"], trained["hold"]
    everything = np.arange(len(scenes))
    proposals = proposals_of(trained["head"], feats, scenes, everything)
    assert sum(len(p) for p in proposals) > 0
    head, history = train_box_head(feats, scenes, proposals, fit, 10, 6, 0, hold)
    assert len(history) == 10 and all(0.0 <= m <= 1.0 for m, _ in history)
    scoring = Scoring(alpha=0.5, nms_iou=0.6)
    untrained = BoxHead(MID_CHANNELS, trained["variant"].deep_channels).eval()
    truths = truths_of(scenes, fit)
    learned = detection_map(detect_all(head, feats, scenes, proposals, fit, [scoring])[0], truths)[0]
    before = detection_map(detect_all(untrained, feats, scenes, proposals, fit, [scoring])[0], truths)[0]
    assert learned > before + 0.2, (learned, before)
    # The threshold is a score the head gives, and weighing recall more never raises it.
    threshold, f2, _, recall = choose_min_score(head, scoring, feats, scenes, proposals, fit)
    assert 0.0 < threshold < 1.0 and f2 > 0.0 and recall > 0.5, (threshold, f2, recall)
    assert choose_min_score(head, scoring, feats, scenes, proposals, fit, beta=1.0)[0] >= threshold
    # The per-part report at that threshold: fine mode's garments against the true ones, on the scenes asked for.
    report = holdout_report(head, scoring, feats, scenes, proposals, fit, threshold)
    assert report["scenes"] == len(fit) and report["f_beta"] == pytest.approx(f2, abs=1e-4)
    assert report["garments_per_scene"] == pytest.approx(np.mean([len(scenes[i]["objects"]) for i in fit]), abs=1e-3)
    assert report["searched_per_scene"] > 0
    nothing = holdout_report(head, scoring, feats, scenes, proposals, fit, float("inf"))
    assert (nothing["recall"], nothing["searched_per_scene"]) == (0.0, 0.0)


@pytest.mark.parametrize("n", [1, 9, 10, 11])
def test_split_holds_out_at_least_one_scene(n: int) -> None:
    assert 1 <= split_scenes(_scenes(n, per_scene=1), seed=0).sum() <= n
