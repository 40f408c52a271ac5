"""The embedder: EfficientNet-Lite features (ImageNet or fashion-trained) fused with the seed-001 colour feature."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fashion_search.core.batching import DynamicBatcher, batch_policy
from fashion_search.core.model_base import InferenceModel, file_digest, for_inference, warm_up_batches
from fashion_search.core.settings import Settings
from fashion_search.core.vectors import l2_normalize, mirror_average, mirror_averaged
from fashion_search.services.embedder.backbone import LITE0, TRAINED_IMAGE_SIZE, BackboneOutput, EfficientNetBackbone
from fashion_search.services.embedder.fashion_net import (
    EMBED_DIM,
    EmbeddingNetwork,
    FashionTail,
    RestNetwork,
    TrunkNetwork,
    load_tail,
    shipped_weights,
    weights_backbone,
)

# One image's rows of a BackboneOutput: pooled features, feature map, pooled RGB.
BackboneRows = tuple[np.ndarray, np.ndarray, np.ndarray]

COLOR_POSITIONS = 10
COLOR_DIM = 3 * COLOR_POSITIONS
# Fixed z-score constants for RGB in [0, 1]: a per-image z-score (as in the seed's formula) would map
# a plain black and a plain white garment to the same vector, so we standardise with global constants.
_RGB_MEAN = 0.5
_RGB_STD = 0.28


def color_feature(out: BackboneOutput, positions: int = COLOR_POSITIONS) -> np.ndarray:
    """Seed 001: RGB (pooled to the feature-map grid) at the top-k positions of channel-mean activation."""
    activation = out.fmap.mean(axis=1).reshape(len(out.fmap), -1)  # B × (h·w)
    top = np.argsort(-activation, axis=1, kind="stable")[:, :positions]
    rgb = out.rgb_pooled.reshape(len(out.fmap), 3, -1)  # B × 3 × (h·w)
    picked = np.take_along_axis(rgb, top[:, None, :], axis=2)  # B × 3 × k
    feature = picked.transpose(0, 2, 1).reshape(len(out.fmap), -1)  # [r1, g1, b1, r2, ...]
    return ((feature - _RGB_MEAN) / _RGB_STD).astype(np.float32)


@dataclass
class Trunk:
    """Images through the stem and first `blocks` blocks: what two embedders on the same pixels compute alike."""

    rgb: torch.Tensor  # the preprocessed images, B×3×S×S in [0, 1]
    features: torch.Tensor
    blocks: int


class GarmentEmbedder(InferenceModel):
    """Image → [deep features (unit length) ‖ colour · w/√30], L2-normalised; w = settings.color_weight.

    Deep features: a fashion-trained 512-d FC (`embedder_model="fashion-v3"` on EfficientNet-Lite2, `"fashion-v2"` or
    `"fashion-v1"` on Lite0; 542-d in all, as seed 001) or Lite0's ImageNet pooled 1280-d features (`"imagenet"`, v0).
    """

    def __init__(self, settings: Settings | None = None, backbone: EfficientNetBackbone | None = None) -> None:
        super().__init__(settings)
        self.variant = self.settings.embedder_model
        # The fashion tail rewrites the last blocks' weights, so it never shares a backbone with the detector.
        shareable = backbone is not None and self.variant == "imagenet"
        if self.variant != "imagenet" and not self.weights.is_file():
            raise FileNotFoundError(
                f"no weights for embedder {self.variant!r} at {self.weights}: train them with `fashion-search train "
                "embedder` (docs/MODELS.md) or point FS_EMBEDDER_WEIGHTS at a weight file"
            )
        network = LITE0 if self.variant == "imagenet" else weights_backbone(self.weights)
        self.backbone = (
            backbone if shareable and backbone is not None else EfficientNetBackbone(self.settings, network)
        )
        self._network: EmbeddingNetwork | torch.jit.ScriptModule | None = None  # the tail's whole network
        self._tail: FashionTail | None = None
        self._parts: dict[tuple[str, int], Callable[[torch.Tensor], object]] = {}  # trunk / rest networks by blocks
        self._parts_lock = threading.Lock()

    @property
    def deep_dim(self) -> int:
        """Dimension of the learned (or ImageNet) part."""
        return EfficientNetBackbone.feature_dim if self.variant == "imagenet" else EMBED_DIM

    @property
    def dim(self) -> int:
        """Vector dimension (no weights are loaded to answer)."""
        return self.deep_dim + COLOR_DIM

    @property
    def model_name(self) -> str:
        """Model identifier (weights variant and file digest, colour weight, mirroring, input size unless the trained
        one): vectors are comparable only between embedders of the same name."""
        mirror = {"off": "", "catalog": "+catalog-mirror", "both": "+mirror"}[self.settings.mirror_averaging]
        variant = self.variant if self.variant == "imagenet" else f"{self.variant}.{self._weights_digest}"
        size = self.settings.embed_image_size
        at_size = "" if size == TRAINED_IMAGE_SIZE else f"@{size}px"
        net = self.backbone.name.replace("efficientnet-", "effnet-")
        return f"{net}-{variant}+color30@w{self.settings.color_weight:g}{mirror}{at_size}"

    @cached_property
    def _weights_digest(self) -> str:
        # Retrained weights keep the variant's name; without this an index or cache would mix their vectors.
        return file_digest(self.weights)

    def _load(self) -> None:
        self.backbone.load()
        # Concurrent callers' images go through the network together (one preprocessed image per item); whether
        # depends on the device, known only now.
        self._batcher: DynamicBatcher[torch.Tensor, BackboneRows] = DynamicBatcher(
            f"embedder {self.variant}", self._forward_rows,
            batch_policy(self.settings, "embedder", self.backbone.device.type == "cuda"),
        )
        size = self.settings.embed_image_size
        if self.variant != "imagenet":
            tail, _ = load_tail(self.backbone.network, self.weights)
            self._tail = tail
            tail.to(self.backbone.device)  # its new layers; the blocks it shares are there already
            self._network = for_inference(
                EmbeddingNetwork(self.backbone.network, tail), torch.zeros(1, 3, size, size),
                self.backbone.device, self.settings,
            )
        blank = Image.new("RGB", (size, size), "white")
        largest = max(self.settings.max_garments, self._batcher.policy.max_batch_size)
        warm_up_batches(self.backbone.device, lambda n: self._forward(self.backbone.preprocess([blank] * n)), largest)

    @property
    def weights(self) -> Path:
        """The tail's weight file: FS_EMBEDDER_WEIGHTS, else the one shipped for the variant."""
        return self.settings.embedder_weights or shipped_weights(self.variant)

    def raw(self, images: Sequence[Image.Image]) -> BackboneOutput:
        """Deep features (before normalisation), last feature map and pooled RGB for a batch; the forward pass may
        be shared with other threads' images (settings.embedder_batching)."""
        self.load()
        rows = self._batcher.submit(list(self.backbone.preprocess(images)))
        return BackboneOutput(*(np.stack(part) for part in zip(*rows, strict=True)))

    @torch.inference_mode()
    def _forward_rows(self, rgbs: list[torch.Tensor]) -> list[BackboneRows]:
        """One forward pass over preprocessed images; each image's (pooled, fmap, rgb_pooled) rows."""
        out = self._forward(torch.stack(rgbs))
        return list(zip(out.pooled, out.fmap, out.rgb_pooled, strict=True))

    @torch.inference_mode()
    def _forward(self, rgb: torch.Tensor) -> BackboneOutput:
        if self._network is None:
            return self.backbone.forward_rgb(rgb)
        rgb = rgb.to(self.backbone.device)
        return _output(*self._network(self.backbone.normalize(rgb)), rgb)

    # ---- a trunk shared with another embedder on the same pixels (catalog photos) ----------------------------
    def trunk_blocks(self) -> int:
        """Leading blocks this embedder runs at their ImageNet weights on the image itself (0: none to share)."""
        if self.variant == "imagenet" or mirror_averaged(self.settings.mirror_averaging, catalog=False):
            return 0
        self.load()
        return self._tail.start if self._tail is not None else 0

    def shared_blocks(self, other: GarmentEmbedder) -> int:
        """Leading blocks both embedders compute alike for an image (same network, input size and device)."""
        same_input = (
            self.backbone.name == other.backbone.name
            and self.settings.embed_image_size == other.settings.embed_image_size
            and self.backbone.device == other.backbone.device
        )
        return min(self.trunk_blocks(), other.trunk_blocks()) if same_input else 0

    @torch.inference_mode()
    def trunk(self, images: Sequence[Image.Image], blocks: int) -> Trunk:
        """The images through the stem and the first `blocks` blocks, for embed_trunk of this or another embedder."""
        rgb = self.backbone.preprocess(images).to(self.backbone.device)
        network = self._part("trunk", blocks, lambda: TrunkNetwork(self.backbone.network, blocks))
        return Trunk(rgb, network(self.backbone.normalize(rgb)), blocks)  # type: ignore[arg-type]

    @torch.inference_mode()
    def embed_trunk(self, trunk: Trunk) -> np.ndarray:
        """embed() of the images a trunk was computed from, going on from the trunk's features."""
        if self._tail is None or trunk.blocks > self._tail.start:
            raise ValueError(f"{self.model_name} cannot go on from a trunk of {trunk.blocks} blocks")
        tail = self._tail
        network = self._part("rest", trunk.blocks, lambda: RestNetwork(self.backbone.network, tail, trunk.blocks))
        out = _output(*network(trunk.features), trunk.rgb)  # type: ignore[misc]
        return combine(l2_normalize(out.pooled), color_feature(out), self.settings.color_weight)[1]

    def _part(self, kind: str, blocks: int, build: Callable[[], torch.nn.Module]) -> Callable[[torch.Tensor], object]:
        """A trunk or rest network for this many blocks, built for inference on first use."""
        self.load()
        with self._parts_lock:
            if (kind, blocks) not in self._parts:
                size = self.settings.embed_image_size
                example = torch.zeros(1, 3, size, size)
                if kind == "rest":
                    with torch.inference_mode():
                        example = TrunkNetwork(self.backbone.network, blocks).eval()(example.to(self.backbone.device))
                self._parts[kind, blocks] = for_inference(
                    build().to(self.backbone.device), example, self.backbone.device, self.settings,
                )
            return self._parts[kind, blocks]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed a batch of images to a (B, dim) float32 array of unit vectors."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_parts(images)[1]

    def embed_parts(
        self, images: Sequence[Image.Image], mirrored: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(deep features alone, deep ‖ colour), unit vectors, each averaged with its mirror image's if mirrored
        (default: as settings.mirror_averaging has queries; the pipeline adds catalog-only averaging itself)."""
        if mirrored is None:
            mirrored = mirror_averaged(self.settings.mirror_averaging, catalog=False)
        deep, color = self.features([*images, *(ImageOps.mirror(img) for img in images)] if mirrored else images)
        return combine(deep, color, self.settings.color_weight, mirrored)

    def features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Unit deep features and the unweighted colour feature of each image (no mirror): what `combine` fuses."""
        out = self.raw(images)
        return l2_normalize(out.pooled), color_feature(out)


def _output(deep: torch.Tensor, fmap: torch.Tensor, rgb: torch.Tensor) -> BackboneOutput:
    """A fashion network's outputs as a BackboneOutput, with the input pooled to the feature map's grid."""
    rgb_pooled = torch.nn.functional.adaptive_avg_pool2d(rgb.to(fmap.device), fmap.shape[-2:])
    return BackboneOutput(deep.cpu().numpy(), fmap.cpu().numpy(), rgb_pooled.cpu().numpy())


def combine(
    deep: np.ndarray, color: np.ndarray, color_weight: float, mirrored: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(deep, deep ‖ colour · w/√30) as unit vectors; mirrored: the rows' second half are the first half's mirror
    images, and each image's vectors are averaged with its mirror's."""
    fused = l2_normalize(np.concatenate([deep, color * (color_weight / np.sqrt(COLOR_DIM))], axis=1))
    if mirrored:
        deep, fused = mirror_average(deep), mirror_average(fused)
    return deep, fused
