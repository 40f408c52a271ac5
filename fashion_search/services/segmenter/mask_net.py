"""The trained segmenter: a light U-Net decoder on frozen ImageNet EfficientNet-Lite0 features of the box crop,
trained on generated scenes (`services/segmenter/train_segmenter.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from PIL import Image
from torch import nn

from fashion_search.core.batching import DynamicBatcher, batch_policy
from fashion_search.core.domain import Box
from fashion_search.core.model_base import InferenceModel, file_digest, for_inference, warm_up_batches
from fashion_search.core.settings import Settings
from fashion_search.services.embedder.backbone import load_imagenet_network
from fashion_search.services.segmenter.model import MIN_MASK_FRACTION, MIN_SEGMENT_SIDE, main_components

WEIGHTS = Path(__file__).resolve().parent / "weights" / "masknet_v1.pt"
# The box plus this fraction of its size on each side is squashed to INPUT_SIZE²: the context shows what
# background looks like around the garment.
CONTEXT_FRACTION = 0.1
INPUT_SIZE = 128
# The decoder's last layer works at stride 4 and emits a 2×2 block of logits per cell (pixel shuffle), so the mask
# comes out at stride 2 (a 64² map): as accurate as a stride-2 decoder stage on held-out scenes at less than half the
# cost. Its bilinear upsampling is smooth enough at box scale.
DECODE_STRIDE = 4
OUTPUT_STRIDE = 2
OUTPUT_SIZE = INPUT_SIZE // OUTPUT_STRIDE
# Context outside the image is filled with mid grey (0 after the [-1, 1] scaling): "nothing here".
PAD_VALUE = 128
# Last EfficientNet-Lite0 block at strides 4, 8 and 16, and its channel count.
SKIP_BLOCKS = (2, 4, 10)
SKIP_CHANNELS = (24, 40, 112)
# Decoder width at strides 4, 8 and 16.
DECODER_CHANNELS = (32, 48, 64)

Window = tuple[int, int, int, int]


def _conv_bn(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FrozenEncoder(nn.Module):
    """The ImageNet EfficientNet-Lite0 stem and blocks up to stride 16; returns the skip features."""

    def __init__(self) -> None:
        super().__init__()
        net = load_imagenet_network()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        # Only the blocks the decoder reads are kept: the deeper ones would be dead weight in memory.
        self.blocks = nn.ModuleList(net._blocks[: SKIP_BLOCKS[-1] + 1])
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 4, 8, 16 of a B×3×S×S batch scaled to [-1, 1]."""
        h = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in SKIP_BLOCKS:
                out.append(h)
        return out


class MaskDecoder(nn.Module):
    """U-Net-style decoder: stride-16 features upsampled step by step, fused with each skip, to stride-2 logits."""

    def __init__(self) -> None:
        super().__init__()
        c4, c8, c16 = DECODER_CHANNELS
        s4, s8, s16 = SKIP_CHANNELS
        self.top = nn.Sequential(_conv_bn(s16, c16, 1), _conv_bn(c16, c16))
        self.up8 = _conv_bn(c16 + s8, c8)
        self.up4 = nn.Sequential(_conv_bn(c8 + s4, c4), _conv_bn(c4, c4))
        self.shuffle = DECODE_STRIDE // OUTPUT_STRIDE
        self.logit = nn.Conv2d(c4, self.shuffle**2, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Skip features (strides 4, 8, 16) → B×1×(S/2)×(S/2) mask logits."""
        f4, f8, f16 = feats
        x = self.top(f16)
        for layer, skip in ((self.up8, f8), (self.up4, f4)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = layer(torch.cat([x, skip], dim=1))
        return F.pixel_shuffle(self.logit(x), self.shuffle)


def box_pixels(box: Box, width: int, height: int) -> Window:
    """The box clipped to the image in integer pixels, at least one pixel inside it (the masks' frame)."""
    x0, y0, x1, y1 = box.clip(width, height).as_int()
    # as_int keeps at least one pixel, which may sit just outside the image for an empty clip.
    x0, y0 = min(x0, width - 1), min(y0, height - 1)
    return x0, y0, min(max(x1, x0 + 1), width), min(max(y1, y0 + 1), height)


def context_window(x0: int, y0: int, x1: int, y1: int) -> Window:
    """The box grown by CONTEXT_FRACTION of its size on each side (may reach outside the image)."""
    mx, my = round((x1 - x0) * CONTEXT_FRACTION), round((y1 - y0) * CONTEXT_FRACTION)
    return x0 - mx, y0 - my, x1 + mx, y1 + my


def crop_window(array: np.ndarray, window: Window, fill: int | float) -> np.ndarray:
    """The window of an H×W(×C) array; parts outside the array are filled with `fill`."""
    h, w = array.shape[:2]
    x0, y0, x1, y1 = window
    part = array[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    if not any(pads):
        return part
    out = np.full((y1 - y0, x1 - x0, *array.shape[2:]), fill, dtype=array.dtype)
    out[pads[0]:pads[0] + part.shape[0], pads[2]:pads[2] + part.shape[1]] = part
    return out


def input_crop(rgb: np.ndarray, window: Window) -> np.ndarray:
    """The window of a uint8 RGB image squashed to INPUT_SIZE² (uint8, S×S×3)."""
    return cv2.resize(crop_window(rgb, window, PAD_VALUE), (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


class SegmenterNetwork(nn.Module):
    """Encoder and decoder as one network: a B×3×S×S batch in [-1, 1] → mask logits B×1×(S/2)×(S/2)."""

    def __init__(self, encoder: FrozenEncoder, decoder: MaskDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask logits of the batch."""
        return self.decoder(self.encoder(x))


def to_tensor(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 S×S×3 crops → B×3×S×S float batch in [-1, 1] (EfficientNet-Lite's input range)."""
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def logits_to_mask(logits: np.ndarray, window: Window, box: Window) -> np.ndarray:
    """A window's (S/2)² logit map → the box's bool mask (its largest parts), or the full box when it is near-empty."""
    wx0, wy0, wx1, wy1 = window
    x0, y0, x1, y1 = box
    up = cv2.resize(logits.astype(np.float32), (wx1 - wx0, wy1 - wy0), interpolation=cv2.INTER_LINEAR)
    mask = main_components(up[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] > 0.0)  # logit 0 = probability 0.5
    if mask.mean() < MIN_MASK_FRACTION:
        # Nothing garment-like in the box: the whole box is the safe cut-out (as GrabCut's fallback).
        return np.ones_like(mask)
    return mask


def load_decoder(path: Path) -> tuple[MaskDecoder, dict]:
    """The trained decoder (float16 on disk, float32 in memory) and its meta dict."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob.get("meta", {})
    if meta.get("input_size", INPUT_SIZE) != INPUT_SIZE:
        raise ValueError(f"{path} was trained at {meta['input_size']} px, this code crops to {INPUT_SIZE} px")
    decoder = MaskDecoder()
    decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
    return decoder.eval(), meta


class MaskSegmenter(InferenceModel):
    """Segmenter protocol over the trained mask network; all boxes of an image go through one forward pass."""

    name = "masknet-v1"

    def __init__(self, settings: Settings | None = None, weights: Path | None = None) -> None:
        super().__init__(settings)
        self.weights = Path(weights or self.settings.segmenter_weights or WEIGHTS)
        self.meta: dict = {}

    @cached_property
    def model_name(self) -> str:
        """Name and weights digest."""
        return f"{self.name}.{file_digest(self.weights)}"

    def _load(self) -> None:
        decoder, self.meta = load_decoder(self.weights)
        # Concurrent callers' box crops go through the network together (one crop per item), on a GPU by default.
        self._batcher: DynamicBatcher[np.ndarray, np.ndarray] = DynamicBatcher(
            "segmenter", self._predict_rows, batch_policy(self.settings, "segmenter", self.device.type == "cuda")
        )
        # Through to_tensor: its batches are laid out channels-last, and cuDNN plans per layout as well as shape.
        blank = np.full((INPUT_SIZE, INPUT_SIZE, 3), PAD_VALUE, np.uint8)
        self._network = for_inference(
            SegmenterNetwork(FrozenEncoder(), decoder).to(self.device), to_tensor([blank]), self.device, self.settings
        )
        largest = max(self.settings.max_garments, self._batcher.policy.max_batch_size)
        warm_up_batches(self.device, lambda n: self._network(to_tensor([blank] * n).to(self.device)), largest)

    @torch.inference_mode()
    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> list[np.ndarray]:
        """One H×W bool mask per box (H, W = the clipped box's integer height and width)."""
        return self.segment_batch([(image, boxes)])[0]

    @torch.inference_mode()
    def segment_batch(self, items: Sequence[tuple[Image.Image, Sequence[Box]]]) -> list[list[np.ndarray]]:
        """segment() of each (image, boxes), every box of every image in one forward pass (bulk ingestion)."""
        self.load()
        masks: list[list[np.ndarray]] = []
        crops: list[np.ndarray] = []
        todo: list[tuple[int, int, Window, Window]] = []  # (image, box, context window, box frame)
        for n, (image, boxes) in enumerate(items):
            rgb = np.asarray(image.convert("RGB"))
            img_h, img_w = rgb.shape[:2]
            frames = [box_pixels(b, img_w, img_h) for b in boxes]
            masks.append([np.ones((y1 - y0, x1 - x0), dtype=bool) for x0, y0, x1, y1 in frames])
            for i, (x0, y0, x1, y1) in enumerate(frames):
                # Boxes below MIN_SEGMENT_SIDE keep the full-box mask: too few pixels to tell garment from background.
                if x1 - x0 >= MIN_SEGMENT_SIDE and y1 - y0 >= MIN_SEGMENT_SIDE:
                    window = context_window(*frames[i])
                    crops.append(input_crop(rgb, window))
                    todo.append((n, i, window, frames[i]))
        if not todo:
            return masks
        logits = self.predict(crops)
        for (n, i, window, frame), logit in zip(todo, logits, strict=True):
            masks[n][i] = logits_to_mask(logit, window, frame)
        return masks

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Mask logits (B×(S/2)×(S/2)) of uint8 S×S×3 context crops; the forward pass may be shared with other
        threads' crops (settings.segmenter_batching)."""
        self.load()
        return np.stack(self._batcher.submit(list(crops)))

    @torch.inference_mode()
    def _predict_rows(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over context crops; each crop's logit map."""
        return list(self._network(to_tensor(crops).to(self.device))[:, 0].cpu().numpy())
