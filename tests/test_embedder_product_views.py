"""The embedder trainer's cached product views: plain, mirrored, cut out, then as many random crops as asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import load_catalog
from fashion_search.datasets.scenes import SourceBank
from fashion_search.services.embedder.backbone import load_imagenet_network
from fashion_search.services.embedder.training.train import build_parser, run
from fashion_search.services.embedder.training.views import _frozen, _resize, product_features

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


def test_more_product_views_keep_the_fixed_views_and_add_distinct_random_crops(tmp_path: Path) -> None:
    records = load_catalog(VAL_SAMPLE)[:3]
    net = load_imagenet_network()
    bank = SourceBank(records)
    four = product_features(net, records, bank, 0, tmp_path)
    seven = product_features(net, records, bank, 0, tmp_path, n_views=7)
    assert four.shape[:2] == (3, 4) and seven.shape[:2] == (3, 7) and seven.dtype == torch.float16
    assert len(list(tmp_path.glob("embedder-products-*.pt"))) == 2  # each view count is cached on its own

    # Views 0-2 (what inference sees and what fine mode indexes) do not depend on the view count (up to the float16
    # rounding of a convolution over another batch size).
    assert torch.allclose(four[:, :3].float(), seven[:, :3].float(), atol=1e-2)
    img = Image.open(records[0].image_path)
    plain = _frozen(net, iter([_resize(img), _resize(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]), 2, "views")
    assert torch.allclose(seven[0, :2].float(), plain.float(), atol=1e-2)
    # The extra views are random crops: no two alike.
    crops = seven[:, 3:].float().flatten(2)
    for i in range(crops.shape[1]):
        for j in range(i + 1, crops.shape[1]):
            assert not np.allclose(crops[:, i].numpy(), crops[:, j].numpy(), atol=1e-2)


def test_fewer_product_views_than_the_fixed_ones_are_refused(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--stage", "classes", "--product-views", "2", "--out", str(tmp_path / "w.pt")])
    with pytest.raises(SystemExit, match="--product-views must be at least 3"):
        run(args)
    assert build_parser().parse_args([]).product_views == 4
