"""The embedder's network follows its weight file: Lite0 for fashion-v1/v2, Lite2 for fashion-v3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import load_catalog
from fashion_search.services.embedder.backbone import LITE0, LITE2, load_imagenet_network
from fashion_search.services.embedder.fashion_net import (
    FashionTail,
    frozen_features,
    save_tail,
    shipped_weights,
    tail_start,
    weights_backbone,
)
from fashion_search.services.embedder.model import GarmentEmbedder
from tests.conftest import SAMPLE, make_settings


@pytest.mark.parametrize(("network", "start"), [(LITE0, 12), (LITE2, 16)])
def test_frozen_part_and_tail_compose_to_the_whole_network(network: str, start: int) -> None:
    # The trainer caches the frozen part's output and trains the tail: the two must be the ImageNet network again.
    net = load_imagenet_network(network)
    assert tail_start(net) == start
    tail = FashionTail(net).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        split = tail.feature_map(frozen_features(net, x))
        whole = net.extract_features(x)
    assert split.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(split, whole)


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        load_imagenet_network("efficientnet-lite9")


@pytest.mark.parametrize("variant", ["fashion-v1", "fashion-v2"])
def test_lite0_weight_files_name_their_backbone(variant: str) -> None:
    assert weights_backbone(shipped_weights(variant)) == LITE0


def test_embedder_runs_the_network_its_weight_file_was_trained_on(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "lite2_tail.pt"
    save_tail(FashionTail(load_imagenet_network(LITE2)), weights, {"variant": "fashion-v3", "backbone": LITE2})
    lite2 = GarmentEmbedder(make_settings(tmp_path, embedder_model="fashion-v3", embedder_weights=weights))
    lite0 = GarmentEmbedder(make_settings(tmp_path, embedder_model="fashion-v2"))
    assert lite2.model_name.startswith("effnet-lite2-fashion-v3.")
    assert lite0.model_name.startswith("effnet-lite0-fashion-v2.")
    images = [Image.open(r.image_path).convert("RGB") for r in load_catalog(SAMPLE)[:2]]
    vecs = lite2.embed(images)
    assert vecs.shape == (2, 542)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Same images, other network and weights: other vectors (a Lite0 tail would not even load this file).
    assert not np.allclose(vecs, lite0.embed(images), atol=1e-2)


@pytest.mark.parametrize(("network", "blocks"), [(LITE0, 3), (LITE2, 4)])
def test_instances_stage_trains_every_tail_block_but_the_first_by_default(network: str, blocks: int) -> None:
    from fashion_search.services.embedder.training.train import build_parser, resolve_train_blocks

    default = build_parser().parse_args([]).train_blocks
    net = load_imagenet_network(network)
    assert resolve_train_blocks(net, default) == blocks
    assert resolve_train_blocks(net, 2) == 2


def test_a_variant_without_weights_says_how_to_get_them(tmp_path: Path) -> None:
    # fashion-v3 is not shipped: choosing it without training it first must fail at once, with the remedy.
    missing = tmp_path / "fashion_embedder_v3.pt"
    with pytest.raises(FileNotFoundError, match="train embedder"):
        GarmentEmbedder(make_settings(tmp_path, embedder_model="fashion-v3", embedder_weights=missing))
