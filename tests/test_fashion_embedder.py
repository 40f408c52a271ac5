"""The shipped fashion-trained embedder loads, gives 542-d unit vectors and beats the ImageNet baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_search.core.catalog import load_catalog
from fashion_search.evaluation.category import ablation
from fashion_search.services.embedder.backbone import load_imagenet_network
from fashion_search.services.embedder.fashion_net import load_tail, shipped_weights
from fashion_search.services.embedder.model import COLOR_DIM, GarmentEmbedder
from tests.conftest import SAMPLE, make_settings

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


@pytest.mark.parametrize("variant", ["fashion-v2", "fashion-v1", "fashion-v1-b8"])
def test_shipped_weights_load_and_give_542_d_unit_vectors(tmp_path: Path, variant: str) -> None:
    embedder = GarmentEmbedder(make_settings(tmp_path, embedder_model=variant))
    assert embedder.weights.is_file()
    assert embedder.weights.stat().st_size < 8_000_000, "weights must stay a few MB"
    assert embedder.dim == 512 + COLOR_DIM == 542
    from PIL import Image

    records = load_catalog(SAMPLE)[:2]
    vecs = embedder.embed([Image.open(r.image_path).convert("RGB") for r in records])
    assert vecs.shape == (2, 542)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def sample_ablation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    settings = make_settings(
        tmp_path_factory.mktemp("ablation"), query_expansion=1, category_vote_depth=5, category_vote_weight=0.1,
        category_vote_candidates=30,
    )
    # Catalog: the bundled sample (from train/); queries: held-out validation photos the model never saw.
    folder = tmp_path_factory.mktemp("catalog")
    for rec in load_catalog(SAMPLE):
        (folder / rec.category).mkdir(exist_ok=True)
        (folder / rec.category / Path(rec.image_path).name).symlink_to(rec.image_path)
    return ablation(settings, str(folder), str(VAL_SAMPLE))


def test_learned_features_beat_imagenet_features(sample_ablation: dict[str, dict[str, float]]) -> None:
    imagenet = sample_ablation["imagenet-1280+color"]["P@10"]
    learned = sample_ablation["learned-512+color (542)"]["P@10"]
    assert learned > imagenet + 0.05, sample_ablation
    assert sample_ablation["learned-512"]["P@10"] > sample_ablation["imagenet-1280"]["P@10"], sample_ablation


def test_ablation_ends_with_expansion_then_the_category_vote(sample_ablation: dict[str, dict[str, float]]) -> None:
    names = list(sample_ablation)
    assert names[-2:] == [
        "learned-512+color (542) + query expansion 1",
        "learned-512+color (542) + query expansion 1 + category vote (depth 5, weight 0.1, 30 candidates)",
    ]
    last = sample_ablation[names[-1]]
    # Paired against the row above: the same queries, with and without the vote.
    assert last["ΔP@10"] == pytest.approx(last["P@10"] - sample_ablation[names[-2]]["P@10"], abs=2e-4)


@pytest.mark.parametrize("split", [0, 2, 3, 4])
def test_stage_split_into_a_frozen_and_a_trained_part_equals_the_whole_stage(split: int) -> None:
    # The instances trainer caches the frozen blocks' output and runs only the trained ones: both must compose.
    tail, _ = load_tail(load_imagenet_network(), shipped_weights("fashion-v1"))
    h = torch.randn(2, 192, 7, 7, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = tail.stage(h)
        parts = tail.stage(tail.stage(h, slice(0, split)), slice(split, None))
    torch.testing.assert_close(parts, whole)


def test_extra_scene_sets_train_the_fit_products_and_leave_the_holdout_unchanged() -> None:
    from fashion_search.services.embedder.training.train import split_products, split_training_set

    labels = np.repeat(np.arange(2), 10)
    products = torch.arange(20, dtype=torch.float32)[:, None]
    # Crop features carry their product index (+100 for the extra set) to trace where each crop went.
    first = (torch.arange(20, dtype=torch.float32)[:, None], np.arange(20))
    extra = (torch.arange(20, dtype=torch.float32)[:, None] + 100, np.arange(20))
    alone = split_training_set(products, labels, [first], seed=0)
    data, fit, hold = split_training_set(products, labels, [first, extra], seed=0)
    held = np.flatnonzero(split_products(labels, 0))
    assert len(data.owners) == 40
    assert sorted(fit.street[:, 0].tolist()) == sorted(
        [float(p) for p in range(20) if p not in held] + [p + 100.0 for p in range(20) if p not in held]
    )
    torch.testing.assert_close(hold.street, alone[2].street)
    np.testing.assert_array_equal(hold.owners, alone[2].owners)
    assert hold.street[:, 0].tolist() == [float(p) for p in held]
    np.testing.assert_array_equal(fit.owners, np.concatenate([np.arange(len(fit.labels))] * 2))
