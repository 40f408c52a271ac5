"""The training loop both detector stages share: one-cycle AdamW over batches of cached scene features, with
a random mirror per scene."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

WEIGHT_DECAY = 1e-4
WARMUP = 0.1  # share of the steps that ramp the learning rate up


def one_cycle(
    params: Iterable[nn.Parameter], lr: float, epochs: int, n_scenes: int, batch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a one-cycle learning rate peaking at lr, over epochs of n_scenes in batches."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    steps = epochs * math.ceil(n_scenes / batch)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=WARMUP)


def mirrored_features(feats: tuple, idx: np.ndarray, flip: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached (stride-16, deep) features of the scenes idx in float32, mirrored where flip.

    A mirrored scene's features are close to the mirrored features: a cheap flip augmentation.
    """
    mid, deep = feats[0][idx].float(), feats[1][idx].float()
    mirrored = torch.from_numpy(flip.astype(bool))
    mid[mirrored], deep[mirrored] = mid[mirrored].flip(-1), deep[mirrored].flip(-1)
    return mid, deep


def train_epoch(
    model: nn.Module, members: np.ndarray, batch: int, rng: np.random.Generator,
    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
    loss_of: Callable[[np.ndarray, np.ndarray], torch.Tensor],
) -> tuple[float, float]:
    """One pass over the member scenes in a random order; loss_of(scenes, flips) gives a batch's loss.

    Returns the mean batch loss and the seconds taken.
    """
    model.train()
    order = rng.permutation(members)
    start, total = time.time(), 0.0
    for b in range(0, len(order), batch):
        idx = order[b:b + batch]
        loss = loss_of(idx, rng.integers(0, 2, size=len(idx)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach())
    return total / math.ceil(len(order) / batch), time.time() - start
