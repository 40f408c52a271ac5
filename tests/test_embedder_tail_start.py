"""The embedder's fine-tuned tail can start at an earlier block (`train embedder --tail-start`); its file says where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import load_catalog
from fashion_search.datasets.scenes import SourceBank
from fashion_search.services.embedder.backbone import LITE0, load_imagenet_network
from fashion_search.services.embedder.fashion_net import FashionTail, frozen_features, load_tail, save_tail
from fashion_search.services.embedder.model import GarmentEmbedder
from fashion_search.services.embedder.training.train import ALL_BUT_FIRST, build_parser, resolve_train_blocks, run
from fashion_search.services.embedder.training.views import product_features
from tests.conftest import SAMPLE, make_settings


@pytest.mark.parametrize("start", [8, 11, 12])
def test_an_earlier_cut_still_composes_to_the_whole_network(start: int) -> None:
    net = load_imagenet_network()
    tail = FashionTail(net, start=start).eval()
    assert len(tail.blocks) == len(net._blocks) - start
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(tail.feature_map(frozen_features(net, x, start)), net.extract_features(x))


def test_the_weight_file_carries_its_tail_start_to_the_embedder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "tail8.pt"
    save_tail(FashionTail(load_imagenet_network(), start=8), weights,
              {"variant": "fashion-v2", "backbone": LITE0, "tail_start": 8})
    loaded, _ = load_tail(load_imagenet_network(), weights)
    assert loaded.start == 8 and len(loaded.blocks) == 8
    # The embedder must stop its frozen part at block 8: at the default cut the tail's first block would get the
    # wrong feature map and fail.
    embedder = GarmentEmbedder(make_settings(tmp_path, embedder_model="fashion-v2", embedder_weights=weights))
    images = [Image.open(r.image_path).convert("RGB") for r in load_catalog(SAMPLE)[:2]]
    vecs = embedder.embed(images)
    assert vecs.shape == (2, 542)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_an_earlier_cut_caches_larger_features_under_its_own_key(tmp_path: Path) -> None:
    records = load_catalog(SAMPLE)[:2]
    net = load_imagenet_network()
    bank = SourceBank(records)
    default = product_features(net, records, bank, 0, tmp_path)
    earlier = product_features(net, records, bank, 0, tmp_path, start=8)
    assert default.shape[2:] == (192, 7, 7) and earlier.shape[2:] == (80, 14, 14)
    assert len(list(tmp_path.glob("embedder-products-*.pt"))) == 2
    # The default start given by number reads the default's cache: no third file.
    assert torch.equal(product_features(net, records, bank, 0, tmp_path, start=12), default)
    assert len(list(tmp_path.glob("embedder-products-*.pt"))) == 2


def test_instances_stage_counts_its_trained_blocks_from_the_tails_start() -> None:
    net = load_imagenet_network()
    assert resolve_train_blocks(net, ALL_BUT_FIRST) == 3
    assert resolve_train_blocks(net, ALL_BUT_FIRST, 8) == 7
    assert resolve_train_blocks(net, 3, 8) == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["--stage", "classes", "--tail-start", "16"], "--tail-start must be a block of efficientnet-lite0: 1 to 15"),
    # fashion-v1, the default init, starts at block 12: the instances stage cannot move it.
    (["--stage", "instances", "--tail-start", "8"], "starts its tail at block 12"),
])
def test_a_tail_start_that_cannot_be_used_is_refused(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        run(build_parser().parse_args([*argv, "--out", str(tmp_path / "w.pt")]))
    assert not (tmp_path / "w.pt").exists()


def test_a_classes_stage_cut_earlier_is_its_own_variant_with_its_own_file() -> None:
    from fashion_search.services.embedder.fashion_net import shipped_weights, tail_start
    from fashion_search.services.embedder.training.train import variant_name

    default = tail_start(load_imagenet_network())
    assert variant_name(LITE0, "classes", default, default) == "fashion-v1"
    assert variant_name(LITE0, "classes", 8, default) == "fashion-v1-b8"
    assert shipped_weights("fashion-v1-b8").name == "fashion_embedder_v1_b8.pt"
    # The instances stage keeps its --init's cut and the stage's name.
    assert variant_name(LITE0, "instances", 8, default) == "fashion-v2"
