"""The embedder trainer's pipeline street crops: fine mode's own cut-outs of scene garments, with their products."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fashion_search.core.catalog import load_catalog
from fashion_search.core.settings import Settings
from fashion_search.datasets.scenes import generate_scenes, load_scenes
from fashion_search.evaluation.embedding import street_garments
from fashion_search.pipeline.components import temporary_pipeline
from fashion_search.services.embedder.backbone import load_imagenet_network
from fashion_search.services.embedder.training.train import build_parser, street_crop_sets
from fashion_search.services.embedder.training.views import _frozen, _resize, pipeline_street_features, street_features

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


def test_pipeline_crops_are_fine_modes_cutouts_of_the_right_products_and_cached(tmp_path: Path) -> None:
    generate_scenes(VAL_SAMPLE, tmp_path / "scenes", 5, seed=4, split_name="test")
    scenes = load_scenes(tmp_path / "scenes")
    ids = [r.product_id for r in load_catalog(VAL_SAMPLE)]
    net = load_imagenet_network()
    feats, owners = pipeline_street_features(net, scenes, ids, tmp_path / "cache")

    garments = [ids.index(o["product_id"]) for s in scenes for o in s["objects"]]
    assert len(garments) // 2 <= len(owners) <= len(garments)  # the shipped detector finds most, never more
    assert set(owners.tolist()) <= set(garments)
    assert feats.shape[0] == len(owners) and feats.dtype == torch.float16

    # The same crops fine mode cuts at query time, through the same frozen layers.
    with temporary_pipeline(Settings(torch_threads=0), "fs-test-") as pipeline:
        cutouts, expected_owners, total = street_garments(pipeline, scenes, {pid: i for i, pid in enumerate(ids)})
    assert total == len(garments) and expected_owners == owners.tolist()
    expected = _frozen(net, (_resize(c) for c in cutouts[:2]), 2, "crops")
    assert torch.allclose(feats[:2].float(), expected.float(), atol=1e-2)

    # Simulated crops cover every garment; the pipeline's are loaded from the cache on the next call.
    simulated, sim_owners = street_features(net, scenes, ids, 0, tmp_path / "cache")
    assert len(sim_owners) == len(garments) and simulated.shape[1:] == feats.shape[1:]
    again, again_owners = pipeline_street_features(net, scenes, ids, tmp_path / "cache")
    assert torch.equal(again, feats) and np.array_equal(again_owners, owners)
    assert len(list((tmp_path / "cache").glob("embedder-pipeline-street-*.pt"))) == 1

    # The trainer's crop sets: --scenes simulated first, then the extra set cut as --extra-crops says.
    for how, expected_sizes in (("simulated", [len(garments)] * 2), ("pipeline", [len(garments), len(owners)]),
                                ("both", [len(garments), len(garments), len(owners)])):
        args = build_parser().parse_args(["--scenes", str(tmp_path / "scenes"), "--extra-scenes",
                                          str(tmp_path / "scenes"), "--extra-crops", how])
        sets = street_crop_sets(net, ids, args, tmp_path / "cache")
        assert [len(o) for _, o in sets] == expected_sizes
        assert torch.equal(sets[0][0], simulated)
        if how != "simulated":
            assert torch.equal(sets[-1][0], feats)
