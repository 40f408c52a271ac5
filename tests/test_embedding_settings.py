"""Choosing the colour weight and mirror averaging on the embedder's product holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.datasets.scenes import generate_scenes
from fashion_search.datasets.splits import HOLDOUT
from fashion_search.evaluation.embedding import (
    COLOR_WEIGHTS,
    MIRRORS,
    choose,
    compare_weights,
    comparison_markdown,
    comparison_section,
    holdout_views,
    instance_hits,
    instance_recall,
    load_holdout,
    setting_figures,
    settings_sweep,
    view_features,
)
from fashion_search.evaluation.features import ABLATION_VARIANTS, embed_all
from fashion_search.pipeline.search_pipeline import SearchPipeline, prepare
from fashion_search.services.embedder.fashion_net import shipped_weights
from fashion_search.services.embedder.model import GarmentEmbedder
from tests.conftest import make_settings

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


@pytest.mark.parametrize(("weight", "mirror"), [(0.0, "off"), (0.35, "catalog"), (1.0, "both")])
def test_one_pass_gives_the_vectors_search_and_ingest_use_for_each_setting(
    tmp_path: Path, shared_models: dict, small_records: list[CatalogRecord], weight: float, mirror: str
) -> None:
    plain = shared_models["embedder"]
    settings = plain.settings.model_copy(update={"color_weight": weight, "mirror_averaging": mirror})
    images = [prepare(Image.open(r.image_path).convert("RGB"), settings) for r in small_records[:3]]
    embedder = GarmentEmbedder(settings, plain.backbone)
    pipeline = SearchPipeline(settings, shared_models["detector"], shared_models["segmenter"], embedder, None)  # type: ignore[arg-type]
    views = view_features(plain, iter(images), batch=2)
    np.testing.assert_allclose(views.vectors(weight, mirror == "both"), embedder.embed(images), atol=1e-5)
    np.testing.assert_allclose(views.vectors(weight, mirror != "off"), pipeline.embed_catalog(images), atol=1e-5)
    # The category evaluations embed catalog and query photos as ingest and search do.
    fused = ABLATION_VARIANTS[-1]
    for catalog, expected in ((True, pipeline.embed_catalog(images)), (False, embedder.embed(images))):
        vecs = embed_all(small_records[:3], {"learned": embedder}, settings, catalog=catalog)[fused]
        np.testing.assert_allclose(vecs, expected, atol=1e-5)


def test_recall_counts_undetected_garments_as_misses() -> None:
    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0.1, 0, 0], [0.2, 1, 0, 0], [0, 0, 0.4, 1]], dtype=np.float32)
    owners = np.array([0, 0, 2])  # right first; own product second; own product second
    first, within = instance_hits(queries, owners, gallery, total=4)
    # The per-garment figures the intervals resample average to R@1 and R@10.
    assert first.tolist() == [1.0, 0.0, 0.0, 0.0] and within.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert instance_recall(first, within) == {"R@1": 0.25, "R@10": 0.75}
    assert instance_recall(*instance_hits(queries[:0], owners[:0], gallery, total=2)) == {"R@1": 0.0, "R@10": 0.0}
    assert instance_recall(*instance_hits(queries[:0], owners[:0], gallery, total=0)) == {"R@1": 0.0, "R@10": 0.0}


def test_choice_takes_the_best_sum_and_breaks_ties_towards_the_default_then_no_mirror() -> None:
    def row(weight: float, mirror: str, p10: float, r1: float) -> dict:
        return {"color_weight": weight, "mirror": mirror, "P@10": p10, "R@1": r1}

    default = {"color_weight": 0.35, "mirror": "off"}
    rows = [row(0.35, "off", 0.90, 0.80), row(0.5, "both", 0.91, 0.80), row(0.2, "catalog", 0.91, 0.80)]
    assert choose(rows, default) == {"color_weight": 0.2, "mirror": "catalog"}
    rows.append(row(0.2, "off", 0.91, 0.80))
    assert choose(rows, default) == {"color_weight": 0.2, "mirror": "off"}
    rows.append(row(0.35, "off", 0.92, 0.79))
    assert choose(rows, default) == default
    assert choose([*rows, row(0.75, "both", 0.95, 0.80)], default) == {"color_weight": 0.75, "mirror": "both"}


def _as_fit(tmp_path: Path, variant: str, seed: int = 1) -> Path:
    """A shipped weights file relabelled as trained with --holdout-only (split seed given)."""
    blob = torch.load(shipped_weights(variant), map_location="cpu", weights_only=True)
    blob["meta"] = {**blob["meta"], "variant": variant, "holdout_only": True, "holdout_share": HOLDOUT, "seed": seed}
    weights = tmp_path / f"{variant}-fit-{seed}.pt"
    torch.save(blob, weights)
    return weights


def test_sweep_on_scenes_of_held_out_products(tmp_path: Path) -> None:
    weights = _as_fit(tmp_path, "fashion-v2")
    scenes = tmp_path / "scenes"
    generate_scenes(str(VAL_SAMPLE), str(scenes), 12, 4, "test")
    result = settings_sweep(make_settings(tmp_path), str(VAL_SAMPLE), str(scenes), weights)
    assert len(result["rows"]) == len(COLOR_WEIGHTS) * len(MIRRORS)
    assert 0 < result["held_out_products"] < result["fitted_products"]
    assert 0 < result["detected"] <= result["garments"] and result["scenes"] <= 12
    assert {k: result["chosen"][k] for k in ("color_weight", "mirror")} in [
        {"color_weight": r["color_weight"], "mirror": r["mirror"]} for r in result["rows"]
    ]
    assert result["chosen_query_cost_unchanged"]["mirror"] in ("off", "catalog")
    for r in result["rows"]:
        assert 0.0 <= r["R@1"] <= r["R@10"] <= result["detected"] / result["garments"] + 1e-4  # rounded to 4 places
        assert 0.0 <= r["P@10"] <= 1.0
    # Every setting but the chosen one carries its sum's difference from the chosen one, inside its interval.
    others = [r for r in result["rows"] if (r["color_weight"], r["mirror"]) != tuple(result["chosen"].values())]
    assert len(others) == len(result["rows"]) - 1
    best = max(r["P@10"] + r["R@1"] for r in result["rows"])
    for r in others:
        assert r["Δsum"] == pytest.approx(r["P@10"] + r["R@1"] - best, abs=3e-4)
        assert r["Δsum low"] <= r["Δsum"] + 1e-4 and r["Δsum"] <= r["Δsum high"] + 1e-4
    # The shipped fashion-v2 saw these validation products in no stage: its own crops must find them often.
    assert max(r["R@1"] for r in result["rows"]) >= 0.5, result


def test_two_weight_files_are_compared_on_the_same_holdout_and_crops(tmp_path: Path) -> None:
    new, old = _as_fit(tmp_path, "fashion-v2"), _as_fit(tmp_path, "fashion-v1")
    scenes = tmp_path / "scenes"
    generate_scenes(str(VAL_SAMPLE), str(scenes), 12, 4, "test")
    settings = make_settings(tmp_path)
    result = compare_weights(settings, str(VAL_SAMPLE), str(scenes), new, old)
    assert 0 < result["detected"] <= result["garments"]
    # Each row is what that file's own figures at the configured setting are.
    holdout = load_holdout(settings, str(VAL_SAMPLE), str(scenes), new)
    for name, path in (("weights", new), ("baseline", old)):
        row, _, _ = setting_figures(holdout, *holdout_views(settings, holdout, path), settings.color_weight,
                                    settings.mirror_averaging, settings.query_expansion)
        assert result["rows"][name] == row
    diff, rows = result["difference"], result["rows"]
    assert diff["ΔP@10"] == pytest.approx(rows["weights"]["P@10"] - rows["baseline"]["P@10"], abs=2e-4)
    assert diff["ΔR@1"] == pytest.approx(rows["weights"]["R@1"] - rows["baseline"]["R@1"], abs=2e-4)
    assert diff["Δsum"] == pytest.approx(diff["ΔP@10"] + diff["ΔR@1"], abs=2e-4)
    for key in ("ΔP@10", "ΔR@1", "Δsum"):
        assert diff[f"{key} low"] - 1e-4 <= diff[key] <= diff[f"{key} high"] + 1e-4
    assert "| baseline |" in comparison_markdown(result, "cmd") and "Δsum" in comparison_markdown(result, "cmd")
    # Each split writes its own section: a second split's judgement keeps the first's figures.
    assert result["split_seed"] == 1 and comparison_section(result) == "eval-embedding-comparison-seed1"
    assert "split seed 1" in comparison_markdown(result, "cmd")
    assert comparison_section(result | {"split_seed": 0}) == "eval-embedding-comparison"
    # Files trained on another split hold out other products: no pairing is possible.
    with pytest.raises(ValueError, match="different products"):
        compare_weights(settings, str(VAL_SAMPLE), str(scenes), new, _as_fit(tmp_path, "fashion-v1", seed=2))
    # A baseline trained on every product saw the held-out ones.
    with pytest.raises(ValueError, match="trained on every product"):
        compare_weights(settings, str(VAL_SAMPLE), str(scenes), new, shipped_weights("fashion-v1"))
