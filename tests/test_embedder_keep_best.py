"""A --holdout-only embedder fit keeps the tail of its best holdout epoch, the model the holdout scored."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_search.core.catalog import load_catalog
from fashion_search.datasets.scenes import SourceBank
from fashion_search.services.embedder.backbone import load_imagenet_network
from fashion_search.services.embedder.fashion_net import FashionTail
from fashion_search.services.embedder.training import train as trainer
from fashion_search.services.embedder.training.views import product_features

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.parametrize("keep_best", [True, False])
def test_training_returns_the_best_epochs_tail_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_best: bool
) -> None:
    records = load_catalog(VAL_SAMPLE)
    classes = sorted({r.category for r in records})
    labels = np.array([classes.index(r.category) for r in records])
    products = product_features(load_imagenet_network(), records, SourceBank(records), 0, tmp_path)
    data = trainer.TrainingSet(products, labels, products[:0, 0], np.zeros(0, dtype=int))

    # Scripted holdout scores (the first call scores the untrained tail): the best is after epoch 2 of 3.
    scripted = iter([(0.1, 0.0), (0.2, 0.1), (0.9, 0.1), (0.5, 0.1)])
    snapshots: list[dict[str, torch.Tensor]] = []

    def scores(forward: object, tail: FashionTail, fit: object, hold: object) -> tuple[float, float]:
        snapshots.append(copy.deepcopy(tail.state_dict()))
        return next(scripted)

    monkeypatch.setattr(trainer, "holdout_scores", scores)
    tail, history = trainer.train(data, 3, 0, "classes", holdout=data, keep_best=keep_best)

    assert history == [(0.2, 0.1), (0.9, 0.1), (0.5, 0.1)]
    assert not _same(snapshots[2], snapshots[3]), "epoch 3 must have changed the tail"
    assert _same(tail.state_dict(), snapshots[2] if keep_best else snapshots[3])
