"""The fashion-trained embedding network: EfficientNet-Lite0 with a fine-tuned last stage and a 512-d FC (seed 001)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "fashion_embedder_v2.pt"
# Blocks before this index stay at their ImageNet weights (frozen); from here on they are fine-tuned.
# Block 12 is the second block of the 7×7 stage: the cached frozen features are small (7×7×192).
TAIL_START = 12
EMBED_DIM = 512


class FashionTail(nn.Module):
    """Fine-tuned last blocks + conv head of EfficientNet-Lite0, then the seed-001 FC1 (512-d)."""

    def __init__(self, efficientnet: nn.Module, embed_dim: int = EMBED_DIM, n_classes: int = 0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(efficientnet._blocks)[TAIL_START:])
        self.conv_head = efficientnet._conv_head
        self.bn1 = efficientnet._bn1
        self.swish = efficientnet._swish
        self.n_blocks = len(efficientnet._blocks)
        self.drop_connect_rate = float(efficientnet._global_params.drop_connect_rate or 0.0)
        self.fc = nn.Linear(1280, embed_dim)
        # Training-only classifier (FC2 in the seed); normalised weights, so it shapes the embedding's angles.
        self.classifier = nn.Linear(embed_dim, n_classes, bias=False) if n_classes else None

    def feature_map(self, h: torch.Tensor) -> torch.Tensor:
        """Frozen-part features (B×192×7×7) → last conv feature map (B×1280×7×7)."""
        return self.head_map(self.stage(h))

    def stage(self, h: torch.Tensor, part: slice = slice(None)) -> torch.Tensor:
        """The fine-tuned MBConv blocks (all, or that part of them): B×192×7×7 → B×320×7×7."""
        for i, block in list(enumerate(self.blocks, start=TAIL_START))[part]:
            rate = self.drop_connect_rate * i / self.n_blocks if self.training else None
            h = block(h, drop_connect_rate=rate)
        return h

    def head_map(self, h: torch.Tensor) -> torch.Tensor:
        """The 1×1 conv head: B×320×7×7 → B×1280×7×7."""
        return self.swish(self.bn1(self.conv_head(h)))

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """Average-pooled feature map → 512-d FC output (not normalised)."""
        return self.fc(fmap.mean(dim=(2, 3)))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What the shipped weight file holds (the classifier is dropped: inference does not need it)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("classifier.")}


def shipped_weights(variant: str) -> Path:
    """The weight file shipped for a fashion variant ("fashion-v2" → weights/fashion_embedder_v2.pt)."""
    return WEIGHTS_DIR / f"fashion_embedder_{variant.removeprefix('fashion-')}.pt"


def frozen_features(efficientnet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stem and blocks before TAIL_START at their ImageNet weights (input normalised to [-1, 1])."""
    h = efficientnet._swish(efficientnet._bn0(efficientnet._conv_stem(x)))
    for block in list(efficientnet._blocks)[:TAIL_START]:
        h = block(h)
    return h


def save_tail(tail: FashionTail, path: Path, meta: dict[str, object]) -> None:
    """Ship the tail as float16 (halves the file; retrieval figures unchanged within noise)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in tail.trainable_state().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "meta": meta}, path)


def load_tail(efficientnet: nn.Module, path: Path) -> tuple[FashionTail, dict[str, object]]:
    """A FashionTail over this network with the shipped weights."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    tail = FashionTail(efficientnet, embed_dim=int(blob["meta"].get("embed_dim", EMBED_DIM)))
    tail.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
    tail.eval()
    return tail, blob["meta"]
