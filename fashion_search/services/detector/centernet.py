"""The trained garment detector: a CenterNet-style head (class heatmaps, box sizes, offsets) on frozen
EfficientNet-Lite0 features, trained on generated scenes (`services/detector/train_detector.py`).

v1 reads ImageNet features at 384 px; v2 reads, at 320 px, the stride-32 features of the fashion embedder's
fine-tuned last stage (fashion-v1 weights, trained on product photos only), which know garment classes.
v3 is v2 plus a second stage (`box_head.py`) that names and refines each proposed box from features pooled over it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from PIL import Image
from torch import nn

from fashion_search.core.batching import DynamicBatcher, batch_policy
from fashion_search.core.domain import Box, Detection
from fashion_search.core.model_base import InferenceModel, file_digest, for_inference, warm_up_batches
from fashion_search.core.settings import DEFAULT_DETECTOR_MIN_SCORE, Settings
from fashion_search.services.detector.box_head import BoxHead, Scoring, finish, proposal_tensor
from fashion_search.services.detector.head import CATEGORIES
from fashion_search.services.embedder.backbone import load_imagenet_network
from fashion_search.services.embedder.fashion_net import FashionTail, load_tail, shipped_weights

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
STRIDE = 16
MID_BLOCK = 10  # output of this block (stride 16, 112 channels) joins the deep features (stride 32)
MID_CHANNELS = 112
HEAD_CHANNELS = 128
MAX_DETECTIONS = 20
PRIOR_BIAS = -2.19  # sigmoid(-2.19) ≈ 0.1: the focal-loss prior for rare positives


@dataclass(frozen=True)
class Variant:
    """What a CenterNet variant sees: input size, and whose last stage computes the deep (stride-32) features."""

    name: str
    input_size: int
    # "imagenet": the frozen ImageNet last stage (320 ch); otherwise the fashion embedder's fine-tuned tail
    # (its conv head, 1280 ch): the stage that learned to tell a dress from a skirt.
    deep: str
    deep_channels: int
    box_head: bool = False  # whether a second stage re-scores, names and refines CenterNet's peaks

    @property
    def weights(self) -> Path:
        """The shipped weight file of the head."""
        return WEIGHTS_DIR / f"{self.name.replace('-', '_')}.pt"


VARIANTS = {
    "centernet-v1": Variant("centernet-v1", 384, "imagenet", 320),
    # 320 px: a third fewer pixels than v1, for fine mode's latency budget
    "centernet-v2": Variant("centernet-v2", 320, "fashion-v1", 1280),
    "centernet-v3": Variant("centernet-v3", 320, "fashion-v1", 1280, box_head=True),
}
# Peaks down to this score go to the second stage, which gives the final score (the metrics' low threshold too).
PROPOSAL_MIN_SCORE = 0.05


class CenterHead(nn.Module):
    """Stride-16 fused features → per-class centre heatmap, box size and sub-cell offset."""

    def __init__(self, n_classes: int = len(CATEGORIES), deep_channels: int = 320) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(MID_CHANNELS + deep_channels, HEAD_CHANNELS, 1), nn.BatchNorm2d(HEAD_CHANNELS), nn.ReLU()
        )
        self.body = nn.Sequential(
            nn.Conv2d(HEAD_CHANNELS, HEAD_CHANNELS, 3, padding=1), nn.BatchNorm2d(HEAD_CHANNELS), nn.ReLU(),
            nn.Conv2d(HEAD_CHANNELS, HEAD_CHANNELS, 3, padding=1), nn.ReLU(),
        )
        self.heat = nn.Conv2d(HEAD_CHANNELS, n_classes, 1)
        self.size = nn.Conv2d(HEAD_CHANNELS, 2, 1)
        self.offset = nn.Conv2d(HEAD_CHANNELS, 2, 1)
        nn.init.constant_(self.heat.bias, PRIOR_BIAS)

    def forward(self, mid: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the heatmap (B×C×H×W), log box size in grid cells (B×2×H×W), offset in cells (B×2×H×W)."""
        x = torch.cat([mid, F.interpolate(deep, size=mid.shape[-2:], mode="nearest")], dim=1)
        x = self.body(self.reduce(x))
        return self.heat(x), self.size(x), torch.sigmoid(self.offset(x))


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """Squash to size², scale to [-1, 1] (EfficientNet-Lite's input range), 1×3×S×S."""
    arr = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.float32)
    return (torch.from_numpy(arr).permute(2, 0, 1)[None] / 255.0 - 0.5) / 0.5


class Pyramid(nn.Module):
    """Frozen features a variant's head reads: stride 16 (ImageNet block MID_BLOCK) and its deep stride-32 map."""

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        self.variant = variant
        self.net = load_imagenet_network()
        self.tail: FashionTail | None = None
        if variant.deep != "imagenet":
            # load_tail rewrites the network's last stage with the fashion weights; earlier blocks stay ImageNet.
            self.tail, _ = load_tail(self.net, shipped_weights(variant.deep))
        # With a fashion tail, the blocks from its start on run inside it (then its conv head).
        self.frozen_blocks = list(self.net._blocks) if self.tail is None else list(self.net._blocks)[:self.tail.start]
        self.eval()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stride-16 features, deep stride-32 features) of a normalised image batch."""
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        mid = h
        for i, block in enumerate(self.frozen_blocks):
            h = block(h)
            if i == MID_BLOCK:
                mid = h
        return mid, (h if self.tail is None else self.tail.feature_map(h))


class DetectorNetwork(nn.Module):
    """The detector's fixed-size part: pyramid and first-stage head, one normalised S×S image batch at a time (with
    the box head's per-image part where there is one, so that it runs in the same runtime)."""

    def __init__(self, pyramid: Pyramid, head: nn.Module, box_head: BoxHead | None = None) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.head = head
        self.box_head = box_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(stride-16 features, deep features, centre heatmap, box size, offset); the features reduced by the box
        head where there is one."""
        mid, deep = self.pyramid(x)
        outputs = self.head(mid, deep)
        if self.box_head is not None:
            mid, deep = self.box_head.reduce(mid, deep)
        return mid, deep, *outputs


def decode(
    heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, width: int, height: int, min_score: float
) -> list[Detection]:
    """Peaks of the heatmap (3×3 max-pool NMS) → boxes in the original image's pixels."""
    return [d for d, _ in peaks(heat, size, offset, width, height, min_score)]


def peaks(
    heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, width: int, height: int, min_score: float
) -> list[tuple[Detection, torch.Tensor]]:
    """decode's detections, each with every class's heatmap probability at its peak cell (C)."""
    prob = torch.sigmoid(heat[0])
    maxima = prob * (F.max_pool2d(prob[None], 3, stride=1, padding=1)[0] == prob)
    scores, flat = maxima.flatten().topk(min(MAX_DETECTIONS, maxima.numel()))
    n_cells = prob.shape[1] * prob.shape[2]
    grid_w = prob.shape[2]
    sx, sy = width / grid_w, height / prob.shape[1]
    out = []
    for score, idx in zip(scores.tolist(), flat.tolist(), strict=True):
        if score < min_score:
            break
        cls, cell = divmod(idx, n_cells)
        gy, gx = divmod(cell, grid_w)
        cx = (gx + float(offset[0, 0, gy, gx])) * sx
        cy = (gy + float(offset[0, 1, gy, gx])) * sy
        bw = float(torch.exp(size[0, 0, gy, gx])) * sx
        bh = float(torch.exp(size[0, 1, gy, gx])) * sy
        box = Box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2).clip(width, height)
        if box.width >= 2 and box.height >= 2:
            out.append((Detection(box, CATEGORIES[cls], float(np.float32(score))), prob[:, gy, gx]))
    return out


class SceneDetector(InferenceModel):
    """Detector protocol over a trained CenterNet head; one forward pass per image."""

    def __init__(self, settings: Settings | None = None, variant: str = "centernet-v3") -> None:
        super().__init__(settings)
        self.variant = VARIANTS[variant]
        self.name = variant

    @cached_property
    def model_name(self) -> str:
        """Variant and weights digest (the file holds the default threshold too)."""
        return f"{self.name}.{file_digest(self.variant.weights)}"

    def _load(self) -> None:
        # Concurrent callers' images go through the network together (one preprocessed image per item), on a GPU
        # by default.
        self._batcher: DynamicBatcher[torch.Tensor, tuple[torch.Tensor, ...]] = DynamicBatcher(
            "detector", self._forward_rows, batch_policy(self.settings, "detector", self.device.type == "cuda")
        )
        pyramid = Pyramid(self.variant).to(self.device)
        head, self._box_head, self._scoring, self._min_score = load_heads(self.variant)
        # The first-stage head and the box head's per-image reduction run beside the pyramid; the rest of the second
        # stage pools a handful of boxes, so it and the peak decoding stay on the CPU.
        size = self.variant.input_size
        reduce = copy.deepcopy(self._box_head).to(self.device) if self._box_head is not None else None
        self._network = for_inference(
            DetectorNetwork(pyramid, head.to(self.device), reduce), torch.zeros(1, 3, size, size), self.device,
            self.settings,
        )
        # A batching detector meets every batch size up to its bound (cuDNN plans each on first use on a GPU).
        largest = self._batcher.policy.max_batch_size if self._batcher.policy.enabled else 1
        warm_up_batches(self.device, lambda n: self._network(torch.zeros(n, 3, size, size, device=self.device)),
                        largest)

    @torch.inference_mode()
    def _forward_rows(self, images: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """One forward pass over preprocessed images; each image's (mid, deep, heat, size, offset)."""
        return _rows(self._network(torch.stack(images).to(self.device)))

    @torch.inference_mode()
    def detect(self, image: Image.Image, min_score: float | None = None) -> list[Detection]:
        """Garments in the image, best first, boxes in the image's pixels."""
        return self.detect_batch([image], min_score)[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[Image.Image], min_score: float | None = None) -> list[list[Detection]]:
        """detect() of each image; the network runs over them together (and with other threads' images when
        settings.detector_batching is on)."""
        self.load()
        if not images:
            return []
        threshold = min_score if min_score is not None else self.settings.detector_min_score
        if threshold is None:
            threshold = self._min_score
        size = self.variant.input_size
        rows = self._batcher.submit([preprocess(image, size)[0] for image in images])
        return [
            self._second_stage(mid, deep, heat, sizes, offset, image.width, image.height, threshold)
            for (mid, deep, heat, sizes, offset), image in zip(rows, images, strict=True)
        ]

    def _second_stage(
        self, mid: torch.Tensor, deep: torch.Tensor, heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
        width: int, height: int, threshold: float,
    ) -> list[Detection]:
        """One image's detections from its first-stage maps: peaks, then the box head where the variant has one."""
        if self._box_head is None:
            return decode(heat, size, offset, width, height, threshold)
        proposals = peaks(heat, size, offset, width, height, min(threshold, PROPOSAL_MIN_SCORE))
        if not proposals:
            return []
        logits, deltas = self._box_head.from_reduced(
            mid, deep, proposal_tensor(proposals, width, height),
            torch.zeros(len(proposals), dtype=torch.long), torch.full((len(proposals),), width / height),
        )
        return finish(proposals, logits, deltas, width, height, self._scoring, threshold)


def _rows(outputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """A batch's network outputs as each image's outputs, batch dimension kept (1×…), on the CPU."""
    cpu = [t.cpu() for t in outputs]
    return [tuple(t[i:i + 1] for t in cpu) for i in range(len(cpu[0]))]


def _float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_heads(variant: Variant) -> tuple[CenterHead, BoxHead | None, Scoring, float]:
    """The variant's trained CenterNet head, its second stage and scoring if it has one, and its detection
    threshold (float16 on disk)."""
    blob = torch.load(variant.weights, map_location="cpu", weights_only=True)
    head = CenterHead(deep_channels=variant.deep_channels)
    head.load_state_dict(_float32(blob["state"]))
    box_head = None
    scoring = Scoring(**blob["meta"].get("scoring", {}))
    if variant.box_head:
        box_head = BoxHead(MID_CHANNELS, variant.deep_channels)
        box_head.load_state_dict(_float32(blob["box_state"]))
        box_head.eval()
    return head.eval(), box_head, scoring, float(blob["meta"].get("min_score", DEFAULT_DETECTOR_MIN_SCORE))
